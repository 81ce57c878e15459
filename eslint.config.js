// ESLint (typescript-eslint's recommended rules) for the sources and tests; formatting is
// prettier's business (`npm run format`), so eslint-config-prettier turns off every rule that
// would argue with it.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  prettier,
  {
    rules: {
      // `_name` marks a parameter a signature needs and the body does not.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // A `let` read by a closure (a getter, a cleanup) before its one assignment cannot be const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // Mail is full of control characters that we match on purpose (NUL, bare CR, C0 in headers).
      'no-control-regex': 'off',
    },
  },
  {
    // The console's one script runs in the browser.
    files: ['gateway/web/console/assets/*.js'],
    languageOptions: {
      sourceType: 'script',
      globals: { window: 'readonly', document: 'readonly', EventSource: 'readonly', setTimeout: 'readonly', htmx: 'readonly' },
    },
  },
);

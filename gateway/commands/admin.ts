import { randomBytes } from 'node:crypto';
import { Command } from 'commander';

/** `mailgate admin`: what the REST API's `[admin]` section needs made. */
export function adminCommand(): Command {
  const admin = new Command('admin').description('make what [admin] needs: tokens for scripts that call the REST API');

  admin
    .command('token')
    .description('make a random token for [[admin.token]]: prints the token (shown this once; give it to the script) and its token_hash (for the config)')
    .action(async () => {
      const { hashPassword } = await import('../config/password.js');
      // 32 random bytes: nothing to guess, so the scrypt hash only keeps a stolen config from giving the token away.
      const token = randomBytes(32).toString('base64url');
      process.stdout.write(`token = ${token}\ntoken_hash = "${hashPassword(token)}"\n`);
    });

  return admin;
}

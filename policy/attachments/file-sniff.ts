/**
 * What a part really is, from the first bytes of its decoded content (magic numbers), so a
 * Windows program renamed `invoice.pdf` is still a Windows program. Only the types senders
 * use to deliver code are recognised; anything else is "unknown" and judged by its name.
 */

/** A kind of content recognised by its first bytes. */
export interface ContentKind {
  /** Stable id: `pe`, `elf`, `script`, `zip`, `ole`. */
  id: 'pe' | 'elf' | 'script' | 'zip' | 'ole';
  /** What an admin calls it. */
  label: string;
  /**
   * Extensions whose files legitimately have this content. Naming any of them in the
   * blocked list blocks this content under any other name.
   */
  extensions: readonly string[];
}

const KINDS: Record<ContentKind['id'], ContentKind> = {
  pe: {
    id: 'pe',
    label: 'Windows executable (PE, starts with MZ)',
    extensions: ['.exe', '.dll', '.scr', '.com', '.sys', '.cpl', '.ocx', '.pif', '.drv', '.efi', '.msstyles'],
  },
  elf: { id: 'elf', label: 'Linux/Unix executable (ELF)', extensions: ['.elf', '.so', '.bin', '.out', '.run', '.ko'] },
  script: {
    id: 'script',
    label: 'script with a #! interpreter line',
    extensions: ['.sh', '.bash', '.zsh', '.ksh', '.csh', '.py', '.pl', '.rb', '.php', '.command', '.run', '.js'],
  },
  zip: {
    id: 'zip',
    label: 'zip archive',
    // Office Open XML, OpenDocument, Java and Android packages are zip files by design.
    extensions: [
      '.zip',
      '.jar',
      '.apk',
      '.docx',
      '.docm',
      '.xlsx',
      '.xlsm',
      '.pptx',
      '.pptm',
      '.odt',
      '.ods',
      '.odp',
      '.epub',
      '.xpi',
      '.vsix',
      '.appx',
      '.msix',
      '.nupkg',
      '.kmz',
      '.whl',
    ],
  },
  ole: {
    id: 'ole',
    label: 'OLE compound file (legacy Office, MSI)',
    extensions: ['.doc', '.dot', '.xls', '.xlt', '.ppt', '.pps', '.msi', '.msp', '.msg', '.pub', '.vsd', '.mpp', '.wps'],
  },
};

/** How many decoded bytes {@link sniffContent} wants to see. */
export const SNIFF_BYTES = 8;

/** The kind of content these first decoded bytes start, or undefined when not one we know. */
export function sniffContent(head: Buffer): ContentKind | undefined {
  if (head.length >= 2 && head[0] === 0x4d && head[1] === 0x5a) return KINDS.pe; // "MZ"
  if (head.length >= 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46) return KINDS.elf; // "\x7fELF"
  if (head.length >= 2 && head[0] === 0x23 && head[1] === 0x21) return KINDS.script; // "#!"
  // A UTF-8 byte order mark in front of "#!" still runs with some interpreters.
  if (head.length >= 5 && head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf && head[3] === 0x23 && head[4] === 0x21) return KINDS.script;
  // Local file header, or an empty archive's end of central directory.
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6))) return KINDS.zip;
  if (head.length >= 8 && head.subarray(0, 8).equals(OLE_MAGIC)) return KINDS.ole;
  return undefined;
}

const OLE_MAGIC = Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]);

/** Every kind, for rule building. */
export const contentKinds: readonly ContentKind[] = Object.values(KINDS);

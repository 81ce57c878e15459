/**
 * Staging buffers for writers that collect small pieces into large writes (the store's
 * message writer, the ingest spool).
 */

const MIN_STAGE = 1024;

/**
 * A staging buffer that holds `need` bytes (at most `max`), keeping the first `used` bytes of
 * `stage`. It grows by doubling, so a small message costs about its size, not a whole `max`.
 */
export function grownStage(stage: Buffer, used: number, need: number, max: number): Buffer {
  if (need <= stage.length) return stage;
  let size = Math.max(MIN_STAGE, stage.length);
  while (size < need) size *= 2;
  const grown = Buffer.allocUnsafe(Math.min(size, max));
  stage.copy(grown, 0, 0, used);
  return grown;
}

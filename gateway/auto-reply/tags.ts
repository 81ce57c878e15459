/** Tags the unknown-recipient handling sets (Enate "Inbound Email"), read by the quarantine forwarding too. */

/** Tag of fetched mail written to an address no alias of its mailbox has (`[partition] unknown_recipient`). */
export const UNKNOWN_RECIPIENT_TAG = 'unknown-recipient';
/** Mail to an unconfigured address that was answered automatically is resolved (Enate): no agent need pick it up. */
export const RESOLVED_TAG = 'resolved';

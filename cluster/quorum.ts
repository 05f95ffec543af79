/**
 * Quorum arithmetic of a partition's copies (design §5), in one place: acknowledgements, claims,
 * the check after a stall and the check of rebuilt copies all count against these.
 */

/**
 * The fewest of `copies` that make a majority: any two such sets share a copy, so what a
 * majority holds survives the loss of any minority.
 */
export function majorityOf(copies: number): number {
  return Math.floor(copies / 2) + 1;
}

/**
 * The fewest of `copies` that share a copy with every majority of them: `copies` minus a majority,
 * plus one. Answers from this many copies include one from any majority that promised something
 * (a newer epoch, say).
 */
export function intersectingEveryMajority(copies: number): number {
  return copies - majorityOf(copies) + 1;
}

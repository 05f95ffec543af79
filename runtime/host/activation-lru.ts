import type { Activation } from "./activation.js";

/**
 * The activations in least-recently-used order: an intrusive doubly linked list through
 * `lruPrev`/`lruNext`, so touching a twin on each event and evicting the coldest are O(1)
 * (a Map re-inserted on every use degrades as deleted slots pile up before a rehash).
 */
export class ActivationLru {
  private head: Activation | undefined;
  private tail: Activation | undefined;

  /** The least recently used activation. */
  get first(): Activation | undefined {
    return this.head;
  }

  /** Adds `act` as the most recently used. */
  append(act: Activation): void {
    act.lruPrev = this.tail;
    act.lruNext = undefined;
    if (this.tail !== undefined) this.tail.lruNext = act;
    else this.head = act;
    this.tail = act;
  }

  /** Marks `act` as the most recently used. */
  touch(act: Activation): void {
    if (this.tail === act) return;
    this.remove(act);
    this.append(act);
  }

  /** Takes `act` out of the list. */
  remove(act: Activation): void {
    const { lruPrev: prev, lruNext: next } = act;
    if (prev !== undefined) prev.lruNext = next;
    else if (this.head === act) this.head = next;
    if (next !== undefined) next.lruPrev = prev;
    else if (this.tail === act) this.tail = prev;
    act.lruPrev = undefined;
    act.lruNext = undefined;
  }
}

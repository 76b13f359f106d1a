// fleet.js: the dashboard's fleet model and its virtual window, kept apart
// from the DOM so that they are tested under Node.js (testdata/fleet_test.mjs).
//
// The model holds every known device once, in display order: a sort key
// per device (kept in d._k when the device is placed) and the serial number
// to break ties, so that each device has exactly one place. A device whose
// key changes moves by binary search, O(log n) to find and one splice to
// move; a burst of changes (a page of the device listing, a storm of
// pushes) is sorted on its own and merged in one O(n) pass instead.

// BATCH is the number of changed devices from which a merge beats moving
// them one splice at a time.
const BATCH = 32;

/**
 * compareKeys orders (key, sn) pairs: by key in direction dir (1 or -1),
 * unknown keys (null) last whatever the direction, then by sn ascending.
 */
export function compareKeys(ka, sa, kb, sb, dir) {
  if (ka !== kb) {
    if (ka === null) return 1;
    if (kb === null) return -1;
    return (ka < kb ? -1 : 1) * dir;
  }
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

/** lowerBound is the first index of list whose device does not sort before (k, sn). */
export function lowerBound(list, k, sn, dir) {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const e = list[mid];
    if (compareKeys(e._k, e.sn, k, sn, dir) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * SortedFleet is the devices in display order. keyOf(d) gives a device's
 * sort key (a string, a number or null); the model remembers the key each
 * device was placed with, so a device is found by binary search even after
 * its fields changed, until update() moves it.
 */
export class SortedFleet {
  constructor(keyOf, dir) {
    this.list = [];
    this.keyOf = keyOf || ((d) => d.sn);
    this.dir = dir || 1;
    this.cmp = (a, b) => compareKeys(a._k, a.sn, b._k, b.sn, this.dir);
  }

  get length() {
    return this.list.length;
  }

  /** setOrder sorts the whole model by a new key and direction. */
  setOrder(keyOf, dir) {
    this.keyOf = keyOf;
    this.dir = dir;
    for (const d of this.list) d._k = keyOf(d);
    this.list.sort(this.cmp);
  }

  /** indexOf is the index of a placed device, or -1. */
  indexOf(d) {
    if (!d._in) return -1;
    const i = lowerBound(this.list, d._k, d.sn, this.dir);
    if (this.list[i] === d) return i;
    return this.list.indexOf(d); // not reached while keys are only changed here
  }

  /**
   * update places each device of ds where its key now puts it: a new one is
   * inserted, one whose key changed is moved, the others stay. It reports
   * whether the order of the list changed.
   */
  update(ds) {
    const moved = [];
    for (const d of ds) {
      if (d._mv) continue; // listed twice
      const k = this.keyOf(d);
      if (d._in && k === d._k) continue;
      d._nk = k;
      d._mv = true;
      moved.push(d);
    }
    if (!moved.length) return false;
    if (moved.length < BATCH) {
      for (const d of moved) {
        if (d._in) this.list.splice(this.indexOf(d), 1);
        d._k = d._nk;
        d._in = true;
        d._mv = false;
        this.list.splice(lowerBound(this.list, d._k, d.sn, this.dir), 0, d);
      }
      return true;
    }
    const rest = moved.some((d) => d._in) ? this.list.filter((d) => !d._mv) : this.list;
    for (const d of moved) {
      d._k = d._nk;
      d._in = true;
      d._mv = false;
    }
    moved.sort(this.cmp);
    this.list = merge(rest, moved, this.cmp);
    return true;
  }

  /** remove takes devices out of the model. */
  remove(ds) {
    const gone = ds.filter((d) => d._in);
    if (!gone.length) return;
    if (gone.length < BATCH) {
      for (const d of gone) {
        this.list.splice(this.indexOf(d), 1);
        d._in = false;
      }
      return;
    }
    for (const d of gone) d._in = false;
    this.list = this.list.filter((d) => d._in);
  }

  clear() {
    for (const d of this.list) d._in = false;
    this.list = [];
  }
}

/** merge merges two lists sorted by cmp into a new one. */
export function merge(a, b, cmp) {
  if (!b.length) return a.slice();
  if (!a.length) return b.slice();
  if (cmp(a[a.length - 1], b[0]) < 0) return a.concat(b); // the usual case of a listing in order
  const out = new Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) out[k++] = cmp(a[i], b[j]) <= 0 ? a[i++] : b[j++];
  while (i < a.length) out[k++] = a[i++];
  while (j < b.length) out[k++] = b[j++];
  return out;
}

/**
 * visibleRange is the slice of count rows of rowHeight px to render in a
 * viewport of viewHeight px scrolled to scrollTop px (from the first row),
 * with overscan rows either side: [start, end) and the heights of the
 * spacers above and below them. A list taller than maxHeight px (browsers
 * cap an element's height) is mapped onto maxHeight: the scroll position
 * is then a fraction of the list.
 */
export function visibleRange(count, rowHeight, scrollTop, viewHeight, overscan, maxHeight) {
  const shown = Math.ceil(viewHeight / rowHeight) + 1;
  const full = count * rowHeight;
  let first;
  let offset; // px from the top of the list to the top of row first
  if (full <= maxHeight) {
    const top = Math.max(0, Math.min(scrollTop, full - viewHeight));
    first = Math.min(Math.floor(top / rowHeight), Math.max(0, count - 1));
    offset = first * rowHeight;
  } else {
    const frac = Math.min(1, Math.max(0, scrollTop / Math.max(1, maxHeight - viewHeight)));
    const exact = frac * Math.max(0, count - shown + 1);
    first = Math.floor(exact);
    offset = scrollTop - (exact - first) * rowHeight;
  }
  const start = Math.max(0, first - overscan);
  const end = Math.min(count, first + shown + overscan);
  const total = Math.min(full, maxHeight);
  const padTop = Math.max(0, offset - (first - start) * rowHeight);
  const padBottom = Math.max(0, total - padTop - (end - start) * rowHeight);
  return { start, end, padTop, padBottom };
}

// Tests of fleet.js, the dashboard's sorted fleet model and virtual window.
// TestFleetJS (in dashboard_test.go) copies the embedded fleet.js next to
// this file as fleet.mjs and runs `node --test`.

import test from "node:test";
import assert from "node:assert/strict";
import { SortedFleet, compareKeys, lowerBound, merge, visibleRange } from "./fleet.mjs";

// A small deterministic generator, so a failure repeats.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function expectOrder(f, devices, keyOf, dir, what) {
  const want = devices.slice().sort((a, b) => compareKeys(keyOf(a), a.sn, keyOf(b), b.sn, dir)).map((d) => d.sn);
  assert.deepEqual(f.list.map((d) => d.sn), want, what);
  for (const d of devices) assert.equal(f.list[f.indexOf(d)], d, what + ": indexOf " + d.sn);
}

test("compareKeys puts unknown keys last in both directions, sn breaks ties", () => {
  assert.equal(compareKeys(1, "a", 2, "b", 1), -1);
  assert.equal(compareKeys(1, "a", 2, "b", -1), 1);
  assert.equal(compareKeys(null, "a", 2, "b", 1), 1);
  assert.equal(compareKeys(null, "a", 2, "b", -1), 1);
  assert.equal(compareKeys(5, "a", null, "b", -1), -1);
  assert.equal(compareKeys(3, "b", 3, "a", -1), 1);
  assert.equal(compareKeys(null, "a", null, "b", 1), -1);
});

test("lowerBound finds the place of a key", () => {
  const list = ["a", "c", "e"].map((sn) => ({ sn, _k: sn }));
  assert.equal(lowerBound(list, "a", "a", 1), 0);
  assert.equal(lowerBound(list, "b", "b", 1), 1);
  assert.equal(lowerBound(list, "f", "f", 1), 3);
});

test("merge keeps the order, with and without overlap", () => {
  const cmp = (a, b) => a - b;
  assert.deepEqual(merge([1, 3, 5], [2, 4, 6], cmp), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(merge([1, 2], [3, 4], cmp), [1, 2, 3, 4]);
  assert.deepEqual(merge([], [3], cmp), [3]);
  assert.deepEqual(merge([3], [], cmp), [3]);
});

test("SortedFleet stays in order through inserts, moves, removals and re-sorts", () => {
  const rand = rng(7);
  const all = [];
  let byBattery = (d) => d.battery;
  const f = new SortedFleet((d) => d.sn.toLowerCase(), 1);
  let keyOf = (d) => d.sn.toLowerCase();
  let dir = 1;
  for (let round = 0; round < 300; round++) {
    const op = rand();
    if (op < 0.3 || all.length < 10) {
      // A page of new devices, small or large (both paths of update).
      const n = rand() < 0.5 ? 1 + Math.floor(rand() * 5) : 40 + Math.floor(rand() * 200);
      const page = [];
      for (let i = 0; i < n; i++) {
        const d = { sn: "D-" + String(Math.floor(rand() * 1e6)).padStart(6, "0") + "-" + round + "-" + i, battery: rand() < 0.1 ? null : Math.floor(rand() * 100) };
        page.push(d);
        all.push(d);
      }
      f.update(page);
    } else if (op < 0.75) {
      // Some devices change, a few or many; some not at all.
      const n = rand() < 0.6 ? 1 + Math.floor(rand() * 4) : 50 + Math.floor(rand() * 100);
      const changed = [];
      for (let i = 0; i < n; i++) {
        const d = all[Math.floor(rand() * all.length)];
        if (rand() < 0.8) d.battery = rand() < 0.1 ? null : Math.floor(rand() * 100);
        changed.push(d);
      }
      f.update(changed);
    } else if (op < 0.9) {
      const n = rand() < 0.5 ? 1 : 40 + Math.floor(rand() * 40);
      const gone = [];
      for (let i = 0; i < n && all.length; i++) gone.push(all.splice(Math.floor(rand() * all.length), 1)[0]);
      f.remove(gone);
    } else {
      dir = rand() < 0.5 ? 1 : -1;
      keyOf = rand() < 0.5 ? byBattery : (d) => d.sn.toLowerCase();
      f.setOrder(keyOf, dir);
    }
    expectOrder(f, all, keyOf, dir, "round " + round);
    assert.equal(f.length, all.length);
  }
});

test("an unchanged device does not move", () => {
  const f = new SortedFleet((d) => d.sn, 1);
  const ds = ["b", "a", "c"].map((sn) => ({ sn }));
  assert.equal(f.update(ds), true);
  assert.equal(f.update(ds), false);
  assert.deepEqual(f.list.map((d) => d.sn), ["a", "b", "c"]);
});

test("visibleRange covers the viewport with overscan and spacers that add up", () => {
  const h = 37;
  for (const [count, top, view] of [[0, 0, 460], [5, 0, 460], [100000, 0, 460], [100000, 1850000, 460], [100000, 100000 * h - 460, 460], [1000, 99999999, 460]]) {
    const w = visibleRange(count, h, top, view, 10, 8e6);
    assert.ok(w.start >= 0 && w.end <= count && w.start <= w.end, JSON.stringify(w));
    assert.ok(w.end - w.start <= Math.ceil(view / h) + 1 + 20, "bounded: " + JSON.stringify(w));
    if (count * h > view) {
      // The rows drawn reach from above the viewport to below it.
      const from = w.padTop;
      const to = w.padTop + (w.end - w.start) * h;
      const clamped = Math.min(top, count * h - view);
      assert.ok(from <= clamped && to >= clamped + view, JSON.stringify({ w, top }));
    }
    if (count) assert.ok(Math.abs(w.padTop + (w.end - w.start) * h + w.padBottom - count * h) < 1e-6 || w.padBottom === 0, JSON.stringify(w));
  }
});

test("visibleRange maps a list taller than the cap onto it", () => {
  const h = 37;
  const count = 1000000;
  const max = 8e6;
  const view = 460;
  const first = visibleRange(count, h, 0, view, 10, max);
  assert.equal(first.start, 0);
  const mid = visibleRange(count, h, (max - view) / 2, view, 10, max);
  assert.ok(Math.abs(mid.start + 10 - count / 2) < 20, JSON.stringify(mid));
  assert.ok(mid.padTop + (mid.end - mid.start) * h + mid.padBottom <= max + h);
  const last = visibleRange(count, h, max - view, view, 10, max);
  assert.equal(last.end, count);
  assert.ok(last.padTop <= max - view && last.padTop + (last.end - last.start) * h >= max, JSON.stringify(last));
});

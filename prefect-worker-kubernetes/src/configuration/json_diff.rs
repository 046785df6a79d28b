//! The JSON-patch diff prefect-kubernetes validates manifests with: the operations of
//! python-json-patch's `JsonPatch.from_diff(src, dst)` as of jsonpatch 1.48 (what
//! Prefect 3.9.1 installs), reimplemented so the same manifests pass and the same
//! messages name the same paths.
//!
//! The rules that matter, in jsonpatch's terms:
//! - objects are compared member by member (removed members first, then added ones, then
//!   the common ones, in document order);
//! - lists are compared by **matching up equal items** (difflib's `SequenceMatcher` over
//!   each item's canonical JSON) between their common start and end, unless comparing by
//!   position takes fewer operations; the items of a differing run are then compared by
//!   position, the extra ones removed or added;
//! - a removed value and an equal added value pair into a `move`;
//! - a `remove` directly followed by an `add` at the same path becomes a `replace`;
//! - array indices are those at the moment each operation applies.
//!
//! Not reproduced: for two lists whose lengths multiply past 250,000, jsonpatch may
//! match up items with `SequenceMatcher`'s "autojunk" heuristic; here they are compared by
//! position. (The manifest check compares against a one-container list, so this needs a
//! quarter of a million containers.)

use std::collections::HashMap;

use serde_json::{Map, Value};

/// One operation of the diff, with its final path (RFC 6901).
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// What it does.
    pub op: OpKind,
    /// Where.
    pub path: String,
    /// Where from (`move`).
    pub from: Option<String>,
    /// The new value (`add`, `replace`).
    pub value: Option<Value>,
}

/// The JSON-patch operations a diff produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A member or item the destination has and the source does not.
    Add,
    /// A member or item the source has and the destination does not.
    Remove,
    /// A value that differs.
    Replace,
    /// A value that is elsewhere in the destination.
    Move,
}

/// The operations turning `src` into `dst`, as `JsonPatch.from_diff(src, dst)`.
#[must_use]
pub fn diff(src: &Value, dst: &Value) -> Vec<Operation> {
    let mut b = Builder::default();
    b.compare_values(&[], None, src, dst);
    b.execute()
}

// ---------------------------------------------------------------- paths and array items

/// A part of a path: an object member or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    Key(String),
    Index(usize),
}

/// A part of a location: array indices are replaced by the array item, whose index
/// changes as earlier items are added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Loc {
    Key(String),
    Item(usize),
}

/// An item an array has at some point of the diff.
#[derive(Debug)]
struct Item {
    array: usize,
    label: i64,
    /// Whether the source document has it.
    initial: bool,
}

/// All items an array has at some point of the diff, and the ones it has now, ordered
/// by label.
#[derive(Debug, Default)]
struct Items {
    items: Vec<usize>,
    labels: Vec<i64>,
    present: Vec<usize>,
    present_labels: Vec<i64>,
}

const STEP: i64 = 1 << 16;
const GAP: i64 = 1 << 32;

fn bisect_left(v: &[i64], x: i64) -> usize {
    v.partition_point(|&e| e < x)
}

fn bisect_right(v: &[i64], x: i64) -> usize {
    v.partition_point(|&e| e <= x)
}

fn pointer(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Part::Index(i) => format!("/{i}"),
        })
        .collect()
}

fn joined(path: &[Part], key: Part) -> Vec<Part> {
    let mut p = path.to_vec();
    p.push(key);
    p
}

fn is_prefix(sub: &[Part], parts: &[Part]) -> bool {
    parts.len() >= sub.len() && sub == &parts[..sub.len()]
}

fn is_inside(parts: &[Part], container: &[Part]) -> bool {
    parts.len() > container.len() && is_prefix(container, parts)
}

/// `parts`, which assumes an item at `location`, once that item is gone.
fn without_item(parts: &[Part], location: &[Part]) -> Vec<Part> {
    let mut out = parts.to_vec();
    if let Some((Part::Index(removed), container)) = location.split_last() {
        let depth = location.len() - 1;
        if is_inside(parts, container)
            && let Part::Index(i) = parts[depth]
            && i > *removed
        {
            out[depth] = Part::Index(i - 1);
        }
    }
    out
}

// ---------------------------------------------------------------- value keys

/// The canonical JSON of a value (members sorted): equal for values that are equal in
/// JSON, different for `1`, `1.0` and `true`.
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect::<Map<_, _>>(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

/// Python `==` between JSON values (1 == 1.0 == True, nested too).
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (num(a), num(b)) {
            (Some(p), Some(q)) => p == q,
            _ => a == b,
        },
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// How many operations change `old` into `new` if list items are compared by position.
fn positional_cost(old: &Value, new: &Value) -> usize {
    if py_eq(old, new) {
        return 0;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            o.iter()
                .map(|(k, v)| n.get(k).map_or(1, |w| positional_cost(v, w)))
                .sum::<usize>()
                + n.keys().filter(|k| !o.contains_key(*k)).count()
        }
        (Value::Array(o), Value::Array(n)) => {
            o.len().abs_diff(n.len())
                + o.iter()
                    .zip(n)
                    .map(|(p, q)| positional_cost(p, q))
                    .sum::<usize>()
        }
        _ => 1,
    }
}

// ---------------------------------------------------------------- list matching

/// Up to which product of their lengths all equal items of two lists are matched up.
const EXACT_MATCH_LIMIT: usize = 500 * 500;

/// difflib's `SequenceMatcher(None, a, b, autojunk=False).get_opcodes()`, keeping the
/// runs that are not equal: `(i1, i2, j1, j2)`.
fn unequal_opcodes(a: &[String], b: &[String]) -> Vec<(usize, usize, usize, usize)> {
    let mut b2j: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, key) in b.iter().enumerate() {
        b2j.entry(key.as_str()).or_default().push(j);
    }
    let longest = |alo: usize, ahi: usize, blo: usize, bhi: usize| {
        let (mut besti, mut bestj, mut bestsize) = (alo, blo, 0);
        let mut j2len: HashMap<usize, usize> = HashMap::new();
        for (i, key) in a.iter().enumerate().take(ahi).skip(alo) {
            let mut next: HashMap<usize, usize> = HashMap::new();
            for &j in b2j.get(key.as_str()).map_or(&[][..], Vec::as_slice) {
                if j < blo {
                    continue;
                }
                if j >= bhi {
                    break;
                }
                let k = j
                    .checked_sub(1)
                    .and_then(|p| j2len.get(&p))
                    .copied()
                    .unwrap_or(0)
                    + 1;
                next.insert(j, k);
                if k > bestsize {
                    (besti, bestj, bestsize) = (i + 1 - k, j + 1 - k, k);
                }
            }
            j2len = next;
        }
        // Without junk every match is already maximal: difflib's extension loops are no-ops.
        (besti, bestj, bestsize)
    };
    let mut queue = vec![(0, a.len(), 0, b.len())];
    let mut blocks = Vec::new();
    while let Some((alo, ahi, blo, bhi)) = queue.pop() {
        let (i, j, k) = longest(alo, ahi, blo, bhi);
        if k > 0 {
            blocks.push((i, j, k));
            if alo < i && blo < j {
                queue.push((alo, i, blo, j));
            }
            if i + k < ahi && j + k < bhi {
                queue.push((i + k, ahi, j + k, bhi));
            }
        }
    }
    blocks.sort_unstable();
    let mut collapsed: Vec<(usize, usize, usize)> = Vec::new();
    let (mut i1, mut j1, mut k1) = (0, 0, 0);
    for (i2, j2, k2) in blocks {
        if i1 + k1 == i2 && j1 + k1 == j2 {
            k1 += k2;
        } else {
            if k1 > 0 {
                collapsed.push((i1, j1, k1));
            }
            (i1, j1, k1) = (i2, j2, k2);
        }
    }
    if k1 > 0 {
        collapsed.push((i1, j1, k1));
    }
    collapsed.push((a.len(), b.len(), 0));
    let (mut i, mut j) = (0, 0);
    let mut runs = Vec::new();
    for (ai, bj, size) in collapsed {
        if i < ai || j < bj {
            runs.push((i, ai, j, bj));
        }
        (i, j) = (ai + size, bj + size);
    }
    runs
}

/// `(i1, i2, j1, j2)` for each run of items `src[i1..i2]` replaced by `dst[j1..j2]`,
/// between runs of items both lists have.
fn differing_runs(src: &[Value], dst: &[Value]) -> Vec<(usize, usize, usize, usize)> {
    let src_keys: Vec<String> = src.iter().map(canonical).collect();
    let dst_keys: Vec<String> = dst.iter().map(canonical).collect();
    let shorter = src.len().min(dst.len());
    let mut start = 0;
    while start < shorter && src_keys[start] == dst_keys[start] {
        start += 1;
    }
    let mut common_end = 0;
    while common_end < shorter - start
        && src_keys[src.len() - 1 - common_end] == dst_keys[dst.len() - 1 - common_end]
    {
        common_end += 1;
    }
    let (src_end, dst_end) = (src.len() - common_end, dst.len() - common_end);
    let cost = |(i1, i2, j1, j2): (usize, usize, usize, usize)| -> usize {
        (i2 - i1).abs_diff(j2 - j1)
            + (i1..i2)
                .zip(j1..j2)
                .filter(|&(i, j)| src_keys[i] != dst_keys[j])
                .map(|(i, j)| positional_cost(&src[i], &dst[j]))
                .sum::<usize>()
    };
    let by_position = (start, src_end, start, dst_end);
    if (src_end - start) * (dst_end - start) > EXACT_MATCH_LIMIT {
        return vec![by_position];
    }
    let runs: Vec<_> = unequal_opcodes(&src_keys[start..src_end], &dst_keys[start..dst_end])
        .into_iter()
        .map(|(i1, i2, j1, j2)| (start + i1, start + i2, start + j1, start + j2))
        .collect();
    if runs.iter().map(|r| cost(*r)).sum::<usize>() > cost(by_position) {
        return vec![by_position];
    }
    runs
}

// ---------------------------------------------------------------- the builder

/// An operation with its final parts: kind, path, value, move source.
type Replayed = (OpKind, Vec<Part>, Option<Value>, Option<Vec<Part>>);

#[derive(Debug, Clone)]
struct Op {
    kind: OpKind,
    path: Vec<Loc>,
    from: Option<Vec<Loc>>,
    value: Option<Value>,
}

const ADDED: usize = 0;
const REMOVED: usize = 1;

#[derive(Debug, Default)]
struct Builder {
    /// In insertion order; `None` once paired away.
    ops: Vec<Option<Op>>,
    /// Added and removed values not yet paired, by canonical JSON (last in, first out).
    stored: [HashMap<String, Vec<usize>>; 2],
    item_arena: Vec<Item>,
    arrays: Vec<Items>,
    array_at: HashMap<Vec<Loc>, usize>,
}

impl Builder {
    fn insert(&mut self, op: Op) -> usize {
        self.ops.push(Some(op));
        self.ops.len() - 1
    }

    fn store(&mut self, value: &Value, index: usize, which: usize) {
        self.stored[which]
            .entry(canonical(value))
            .or_default()
            .push(index);
    }

    fn take(&mut self, value: &Value, which: usize) -> Option<usize> {
        self.stored[which].get_mut(&canonical(value))?.pop()
    }

    // -- array items

    fn array(&mut self, location: &[Loc]) -> usize {
        if let Some(&a) = self.array_at.get(location) {
            return a;
        }
        self.arrays.push(Items::default());
        let a = self.arrays.len() - 1;
        self.array_at.insert(location.to_vec(), a);
        a
    }

    fn new_item(&mut self, array: usize, label: i64, initial: bool) -> usize {
        self.item_arena.push(Item {
            array,
            label,
            initial,
        });
        self.item_arena.len() - 1
    }

    /// The item at `index` of `array` now (source items are created as needed).
    fn at(&mut self, array: usize, index: usize) -> usize {
        while self.arrays[array].present.len() <= index {
            let label = self.arrays[array].labels.last().map_or(0, |l| l + GAP);
            let item = self.new_item(array, label, true);
            let a = &mut self.arrays[array];
            a.items.push(item);
            a.labels.push(label);
            a.present.push(item);
            a.present_labels.push(label);
        }
        self.arrays[array].present[index]
    }

    /// A new item inserted at `index` of `array`.
    fn insert_item(&mut self, array: usize, index: usize) -> usize {
        let mut position = 0;
        if index > 0 {
            let before = self.at(array, index - 1);
            position = bisect_right(&self.arrays[array].labels, self.item_arena[before].label);
        }
        let len = self.arrays[array].labels.len();
        let label = if position == 0 || position == len {
            match (
                self.arrays[array].labels.first(),
                self.arrays[array].labels.last(),
            ) {
                (None, _) | (_, None) => 0,
                (Some(first), _) if position == 0 => first - GAP,
                (_, Some(last)) => last + GAP,
            }
        } else {
            if self.arrays[array].labels[position] - self.arrays[array].labels[position - 1] < 2 {
                self.relabel(array);
            }
            let (low, high) = (
                self.arrays[array].labels[position - 1],
                self.arrays[array].labels[position],
            );
            low + STEP.min((high - low) / 2)
        };
        let item = self.new_item(array, label, false);
        let a = &mut self.arrays[array];
        a.items.insert(position, item);
        a.labels.insert(position, label);
        self.add_present(item);
        item
    }

    fn relabel(&mut self, array: usize) {
        let items = self.arrays[array].items.clone();
        let mut labels = Vec::with_capacity(items.len());
        for (i, &item) in items.iter().enumerate() {
            let label = i64::try_from(i).unwrap_or(i64::MAX / GAP) * GAP;
            self.item_arena[item].label = label;
            labels.push(label);
        }
        let present_labels = self.arrays[array]
            .present
            .iter()
            .map(|&p| self.item_arena[p].label)
            .collect();
        let a = &mut self.arrays[array];
        a.labels = labels;
        a.present_labels = present_labels;
    }

    fn add_present(&mut self, item: usize) {
        let Item { array, label, .. } = self.item_arena[item];
        let a = &mut self.arrays[array];
        let pos = bisect_left(&a.present_labels, label);
        a.present.insert(pos, item);
        a.present_labels.insert(pos, label);
    }

    fn remove_present(&mut self, item: usize) {
        let Item { array, label, .. } = self.item_arena[item];
        let a = &mut self.arrays[array];
        let pos = bisect_left(&a.present_labels, label);
        if pos < a.present.len() {
            a.present.remove(pos);
            a.present_labels.remove(pos);
        }
    }

    fn index_of(&self, item: usize) -> usize {
        let Item { array, label, .. } = self.item_arena[item];
        bisect_left(&self.arrays[array].present_labels, label)
    }

    // -- locations

    fn location(&mut self, parts: &[Part]) -> Vec<Loc> {
        let mut location = Vec::with_capacity(parts.len());
        for part in parts {
            let loc = match part {
                Part::Key(k) => Loc::Key(k.clone()),
                Part::Index(i) => {
                    let array = self.array(&location);
                    Loc::Item(self.at(array, *i))
                }
            };
            location.push(loc);
        }
        location
    }

    fn new_location(&mut self, path: &[Part], key: &Part) -> Vec<Loc> {
        let mut location = self.location(path);
        let last = match key {
            Part::Key(k) => Loc::Key(k.clone()),
            Part::Index(i) => {
                let array = self.array(&location);
                Loc::Item(self.insert_item(array, *i))
            }
        };
        location.push(last);
        location
    }

    fn parts(&self, location: &[Loc]) -> Vec<Part> {
        location
            .iter()
            .map(|l| match l {
                Loc::Key(k) => Part::Key(k.clone()),
                Loc::Item(item) => Part::Index(self.index_of(*item)),
            })
            .collect()
    }

    fn set_present(&mut self, location: &[Loc], present: bool) {
        if let Some(Loc::Item(item)) = location.last() {
            if present {
                self.add_present(*item);
            } else {
                self.remove_present(*item);
            }
        }
    }

    // -- the comparison

    fn item_added(&mut self, path: &[Part], key: &Part, item: &Value) {
        let target = joined(path, key.clone());
        if let Some(index) = self.take(item, REMOVED)
            && let Some(removed) = self.ops[index].as_ref().map(|o| o.path.clone())
        {
            let source = self.parts(&removed);
            // A value cannot move into its own children.
            if !is_inside(&target, &source) {
                self.ops[index] = None;
                if source == target {
                    self.set_present(&removed, true);
                } else {
                    let path = self.new_location(path, key);
                    self.insert(Op {
                        kind: OpKind::Move,
                        path,
                        from: Some(removed),
                        value: None,
                    });
                }
                return;
            }
        }
        let location = self.new_location(path, key);
        let index = self.insert(Op {
            kind: OpKind::Add,
            path: location,
            from: None,
            value: Some(item.clone()),
        });
        self.store(item, index, ADDED);
    }

    fn item_removed(&mut self, path: &[Part], key: Part, item: &Value) {
        let source = joined(path, key);
        let location = self.location(&source);
        if let Some(index) = self.take(item, ADDED)
            && let Some(added_location) = self.ops[index].as_ref().map(|o| o.path.clone())
        {
            let added = self.parts(&added_location);
            self.ops[index] = None;
            if without_item(&source, &added) == added {
                // The removed item stays where the added one would be.
                self.set_present(&added_location, false);
            } else {
                self.set_present(&location, false);
                self.insert(Op {
                    kind: OpKind::Move,
                    path: added_location,
                    from: Some(location),
                    value: None,
                });
            }
            return;
        }
        self.set_present(&location, false);
        let index = self.insert(Op {
            kind: OpKind::Remove,
            path: location,
            from: None,
            value: None,
        });
        self.store(item, index, REMOVED);
    }

    fn item_replaced(&mut self, path: &[Part], key: Part, item: &Value) {
        let location = self.location(&joined(path, key));
        self.insert(Op {
            kind: OpKind::Replace,
            path: location,
            from: None,
            value: Some(item.clone()),
        });
    }

    fn compare_dicts(&mut self, path: &[Part], src: &Map<String, Value>, dst: &Map<String, Value>) {
        for (k, v) in src.iter().filter(|(k, _)| !dst.contains_key(*k)) {
            self.item_removed(path, Part::Key(k.clone()), v);
        }
        for (k, v) in dst.iter().filter(|(k, _)| !src.contains_key(*k)) {
            self.item_added(path, &Part::Key(k.clone()), v);
        }
        for (k, s) in src {
            if let Some(d) = dst.get(k) {
                self.compare_values(path, Some(Part::Key(k.clone())), s, d);
            }
        }
    }

    fn compare_lists(&mut self, path: &[Part], src: &[Value], dst: &[Value]) {
        // Once a run is compared the list is dst[..j1] + src[i1..], so src[i1] is at j1.
        for (i1, i2, j1, j2) in differing_runs(src, dst) {
            let paired = (i2 - i1).min(j2 - j1);
            for key in j1..j1 + paired {
                let (old, new) = (&src[i1 + key - j1], &dst[key]);
                match (old, new) {
                    (Value::Object(o), Value::Object(n)) => {
                        self.compare_dicts(&joined(path, Part::Index(key)), o, n);
                    }
                    (Value::Array(o), Value::Array(n)) => {
                        self.compare_lists(&joined(path, Part::Index(key)), o, n);
                    }
                    _ if same_json(old, new) => {}
                    _ => {
                        self.item_removed(path, Part::Index(key), old);
                        self.item_added(path, &Part::Index(key), new);
                    }
                }
            }
            for old in &src[i1 + paired..i2] {
                self.item_removed(path, Part::Index(j1 + paired), old);
            }
            for (key, new) in dst.iter().enumerate().take(j2).skip(j1 + paired) {
                self.item_added(path, &Part::Index(key), new);
            }
        }
    }

    fn compare_values(&mut self, path: &[Part], key: Option<Part>, src: &Value, dst: &Value) {
        let here = match &key {
            Some(k) => joined(path, k.clone()),
            None => path.to_vec(),
        };
        match (src, dst) {
            (Value::Object(s), Value::Object(d)) => self.compare_dicts(&here, s, d),
            (Value::Array(s), Value::Array(d)) => self.compare_lists(&here, s, d),
            _ if same_json(src, dst) => {}
            _ => match key {
                Some(k) => self.item_replaced(path, k, dst),
                None => {
                    self.insert(Op {
                        kind: OpKind::Replace,
                        path: Vec::new(),
                        from: None,
                        value: Some(dst.clone()),
                    });
                }
            },
        }
    }

    /// Replays the operations on the source's arrays for their final indices, and turns
    /// a removal directly followed by an addition at the same path into a replacement.
    fn execute(mut self) -> Vec<Operation> {
        for a in 0..self.arrays.len() {
            let present: Vec<usize> = self.arrays[a]
                .items
                .iter()
                .copied()
                .filter(|&i| self.item_arena[i].initial)
                .collect();
            let labels = present.iter().map(|&i| self.item_arena[i].label).collect();
            self.arrays[a].present = present;
            self.arrays[a].present_labels = labels;
        }
        let ops: Vec<Op> = std::mem::take(&mut self.ops)
            .into_iter()
            .flatten()
            .collect();
        let mut replayed: Vec<Replayed> = Vec::with_capacity(ops.len());
        for op in ops {
            // 'from' is removed before 'path' is added.
            let from = op.from.as_ref().map(|f| self.parts(f));
            if let Some(f) = &op.from {
                self.set_present(f, false);
            }
            let parts = self.parts(&op.path);
            match op.kind {
                OpKind::Remove => self.set_present(&op.path, false),
                OpKind::Add | OpKind::Move => self.set_present(&op.path, true),
                OpKind::Replace => {}
            }
            replayed.push((op.kind, parts, op.value, from));
        }
        let mut out = Vec::with_capacity(replayed.len());
        let mut i = 0;
        while i < replayed.len() {
            if let (Some(first), Some(second)) = (replayed.get(i), replayed.get(i + 1))
                && first.0 == OpKind::Remove
                && second.0 == OpKind::Add
                && first.1 == second.1
            {
                out.push(Operation {
                    op: OpKind::Replace,
                    path: pointer(&second.1),
                    from: None,
                    value: second.2.clone(),
                });
                i += 2;
                continue;
            }
            let (kind, parts, value, from) = &replayed[i];
            out.push(Operation {
                op: *kind,
                path: pointer(parts),
                from: from.as_deref().map(pointer),
                value: value.clone(),
            });
            i += 1;
        }
        out
    }
}

/// jsonpatch compares scalars by their JSON text, so `1`, `1.0` and `true` all differ.
fn same_json(a: &Value, b: &Value) -> bool {
    serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Takes owned `json!` values so the cases read as data.
    #[allow(clippy::needless_pass_by_value)]
    fn ops(src: Value, dst: Value) -> Vec<(OpKind, String)> {
        diff(&src, &dst)
            .into_iter()
            .map(|o| (o.op, o.path))
            .collect()
    }

    #[test]
    fn objects_members_and_values() {
        assert_eq!(
            ops(json!({"a": 1, "b": 2}), json!({"b": 3, "c": 4})),
            [
                (OpKind::Remove, "/a".into()),
                (OpKind::Add, "/c".into()),
                (OpKind::Replace, "/b".into())
            ]
        );
        assert_eq!(
            ops(json!({"a": 1}), json!({"a": 1.0})),
            [(OpKind::Replace, "/a".into())]
        );
        assert!(
            ops(
                json!({"a": [1, {"b": true}]}),
                json!({"a": [1, {"b": true}]})
            )
            .is_empty()
        );
    }

    #[test]
    fn list_items_are_matched_up_not_compared_by_position() {
        // An item inserted in front is one addition, not a change to every item.
        assert_eq!(
            ops(
                json!([{"n": "b"}, {"n": "c"}]),
                json!([{"n": "a"}, {"n": "b"}, {"n": "c"}])
            ),
            [(OpKind::Add, "/0".into())]
        );
        // A scalar changed in place is a replacement (remove + add at one path).
        assert_eq!(
            ops(json!(["x"]), json!([{"n": 1}])),
            [(OpKind::Replace, "/0".into())]
        );
        // A value removed here and added there is a move.
        assert_eq!(
            ops(
                json!({"a": {"k": 1}, "b": {}}),
                json!({"b": {"c": {"k": 1}}})
            ),
            [(OpKind::Move, "/b/c".into())]
        );
    }

    #[test]
    fn matching_up_yields_to_positions_when_cheaper() {
        // jsonpatch's own example: for [2, 3, 5] → [3, 3, 4], two replacements.
        assert_eq!(
            ops(json!([2, 3, 5]), json!([3, 3, 4])),
            [
                (OpKind::Replace, "/0".into()),
                (OpKind::Replace, "/2".into())
            ]
        );
    }
}

//! How deep shared types nest in a document, known before yrs applies an
//! update. yrs deletes and collects nested types recursively, so a chain of
//! maps inside maps, built a few levels per update, would overflow a
//! thread's stack when its outermost map is deleted. The index keeps the
//! depth of every item (how many types contain it), as runs of clocks per
//! client, and [`NestingIndex::judge`] refuses an update that would put an
//! item deeper than the limit. The list document needs four levels (an
//! order's line's fields).
//!
//! What is recorded is what yrs integrated: the document's whole state on
//! load, and the delta of every transaction after ([`NestingIndex::record`]),
//! never an update as sent, which yrs may hold aside or place otherwise.
//! Depths only grow: a struct recorded twice keeps the deeper one. An item
//! that takes its parent from its neighbours counts as deep as the deeper
//! of them (yrs takes the right one's when the left one was collected).

use std::collections::{BTreeMap, HashMap};

use crate::validate::{self, Id, Invalid, Limits, Seen, Struct};

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestingError {
    #[error("types nested deeper than {0}")]
    TooDeep(u32),
    /// It builds on something this document does not hold yet (it would
    /// wait aside, out of the index's sight): send it again later.
    #[error("the update builds on changes not received yet")]
    NotYetHere,
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

/// Depths of a document's items.
#[derive(Debug, Clone)]
pub struct NestingIndex {
    max_depth: u32,
    /// Per client: start clock -> (end clock, depth) of runs of items at one depth.
    runs: HashMap<u64, BTreeMap<u32, (u32, u32)>>,
}

/// How `depth_of` found an id.
enum Found {
    Depth(u32),
    /// A struct of the update being read, not resolved yet.
    Pending(usize),
    Unknown,
}

impl NestingIndex {
    pub fn new(max_depth: u32) -> Self {
        NestingIndex {
            max_depth,
            runs: HashMap::new(),
        }
    }

    /// Runs held (memory grows with them).
    pub fn runs(&self) -> usize {
        self.runs.values().map(BTreeMap::len).sum()
    }

    /// Records what yrs integrated: a transaction's delta, or a document's
    /// whole state; returns how many structs it holds. Fails (recording
    /// nothing) only on bytes that are not an update.
    pub fn record(&mut self, integrated: &[u8]) -> Result<usize, NestingError> {
        // Recording never refuses: any nesting of values reads (iteratively).
        let limits = Limits {
            max_depth: usize::MAX,
            max_clients: usize::MAX,
            max_structs: usize::MAX,
            max_delete_ranges: usize::MAX,
        };
        let (depths, collected) = self.resolve(integrated, &limits, &|_| true, false)?;
        self.insert_all(&depths);
        Ok(depths.len() + collected)
    }

    /// Judges a client's update before it is applied: refused when an item
    /// would sit deeper than the limit, or when it (or a deletion) builds on
    /// a struct the document does not hold and the update does not carry
    /// (yrs would hold it aside, out of sight). `holds(id)` says whether
    /// the document holds the struct `id` (it may have been collected).
    /// Returns how many structs the update carries.
    pub fn judge(
        &self,
        update: &[u8],
        limits: &Limits,
        holds: &dyn Fn(Id) -> bool,
    ) -> Result<usize, NestingError> {
        let (depths, collected) = self.resolve(update, limits, holds, true)?;
        match depths.iter().map(|(_, d)| *d).max() {
            Some(deepest) if deepest > self.max_depth => Err(NestingError::TooDeep(self.max_depth)),
            _ => Ok(depths.len() + collected),
        }
    }

    /// The depth of every item of `update`, resolved through the index and
    /// the update itself with an explicit stack (no recursion), and how
    /// many collected ranges it carries. With `judge`, deleting what the
    /// document does not hold is refused too: it would wait aside, unstored.
    fn resolve(
        &self,
        update: &[u8],
        limits: &Limits,
        holds: &dyn Fn(Id) -> bool,
        judge: bool,
    ) -> Result<(Vec<(Struct, u32)>, usize), NestingError> {
        let mut structs = Vec::new();
        let mut collected: Vec<Struct> = Vec::new();
        let mut deletes = Vec::new();
        validate::walk_update(update, limits, |seen| match seen {
            Seen::Struct(s) if s.item.is_some() => structs.push(s),
            Seen::Struct(s) => collected.push(s),
            Seen::Deleted { client, clock, len } if judge => {
                deletes.push((client, clock + (len - 1)));
            }
            Seen::Deleted { .. } => {}
        })?;
        // What the update carries itself counts as held.
        let mut carried: HashMap<u64, Vec<(u32, u32)>> = HashMap::new();
        for s in structs.iter().chain(collected.iter()) {
            carried
                .entry(s.client)
                .or_default()
                .push((s.clock, s.clock + s.len));
        }
        for ranges in carried.values_mut() {
            ranges.sort_unstable();
        }
        let carries = |(client, clock): Id| {
            carried.get(&client).is_some_and(|ranges| {
                let at = ranges.partition_point(|(_, end)| *end <= clock);
                ranges.get(at).is_some_and(|(start, _)| *start <= clock)
            })
        };
        // The state vector stops at a writer's first gap; what yrs placed
        // past a gap is in the index.
        let holds = |id: Id| holds(id) || carries(id) || self.indexes(id);
        if deletes.iter().any(|id| !holds(*id)) {
            return Err(NestingError::NotYetHere);
        }
        // This update's items by client, in clock order (as written).
        let mut mine: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, s) in structs.iter().enumerate() {
            mine.entry(s.client).or_default().push(i);
        }
        let mut depth: Vec<Option<u32>> = vec![None; structs.len()];
        let mut on_stack = vec![false; structs.len()];
        for start in 0..structs.len() {
            let mut stack = vec![start];
            while let Some(&top) = stack.last() {
                if depth[top].is_some() {
                    stack.pop();
                    continue;
                }
                on_stack[top] = true;
                let refs = structs[top].item.expect("items only");
                // The type containing it: a root, a type item, or the one
                // its neighbours sit in.
                let references: [Option<(Id, u32)>; 2] = match refs.parent {
                    Some(None) => [None, None],
                    Some(Some(parent)) => [Some((parent, 1)), None],
                    None => [
                        refs.origin.map(|id| (id, 0)),
                        refs.right_origin.map(|id| (id, 0)),
                    ],
                };
                let mut deepest: Option<u32> = None;
                let mut waits_for = None;
                for (reference, below_it) in references.into_iter().flatten() {
                    match self.depth_of(reference, &structs, &mine, &depth) {
                        Found::Depth(d) => {
                            let d = d.saturating_add(below_it);
                            deepest = Some(deepest.map_or(d, |x| x.max(d)));
                        }
                        Found::Pending(i) if !on_stack[i] => {
                            waits_for = Some(i);
                            break;
                        }
                        // A cycle (no valid update has one): yrs refuses it.
                        Found::Pending(_) => {}
                        // Held but not indexed: collected; yrs collects what
                        // builds on it, or takes the other neighbour.
                        Found::Unknown if holds(reference) => {}
                        Found::Unknown if judge => return Err(NestingError::NotYetHere),
                        Found::Unknown => {}
                    }
                }
                if let Some(i) = waits_for {
                    stack.push(i);
                    continue;
                }
                depth[top] = Some(deepest.unwrap_or(1));
                stack.pop();
            }
        }
        let depths = structs
            .into_iter()
            .zip(depth)
            .map(|(s, d)| (s, d.unwrap_or(1)))
            .collect();
        Ok((depths, collected.len()))
    }

    /// Whether the index holds the struct `id`.
    fn indexes(&self, (client, clock): Id) -> bool {
        self.runs.get(&client).is_some_and(|runs| {
            runs.range(..=clock)
                .next_back()
                .is_some_and(|(_, (end, _))| clock < *end)
        })
    }

    fn depth_of(
        &self,
        (client, clock): Id,
        structs: &[Struct],
        mine: &HashMap<u64, Vec<usize>>,
        depth: &[Option<u32>],
    ) -> Found {
        if let Some(indexes) = mine.get(&client) {
            let at = indexes.partition_point(|&i| structs[i].clock + structs[i].len <= clock);
            if let Some(&i) = indexes.get(at)
                && structs[i].clock <= clock
            {
                return match depth[i] {
                    Some(d) => Found::Depth(d),
                    None => Found::Pending(i),
                };
            }
        }
        if let Some(runs) = self.runs.get(&client)
            && let Some((_, &(end, d))) = runs.range(..=clock).next_back()
            && clock < end
        {
            return Found::Depth(d);
        }
        Found::Unknown
    }

    fn insert_all(&mut self, depths: &[(Struct, u32)]) {
        for (s, d) in depths {
            self.insert(s.client, s.clock, s.clock + s.len, *d);
        }
    }

    /// Records `[start, end)` of `client` at `depth`; where a part was
    /// recorded already it keeps the deeper of the two.
    fn insert(&mut self, client: u64, start: u32, end: u32, depth: u32) {
        let runs = self.runs.entry(client).or_default();
        // The runs overlapping [start, end), taken out and put back split.
        let overlapping: Vec<(u32, u32, u32)> = runs
            .range(..end)
            .rev()
            .take_while(|(_, (run_end, _))| *run_end > start)
            .map(|(&s, &(e, d))| (s, e, d))
            .collect();
        let mut pieces: Vec<(u32, u32, u32)> = Vec::with_capacity(overlapping.len() * 2 + 1);
        let mut at = start;
        for &(s, e, d) in overlapping.iter().rev() {
            runs.remove(&s);
            if s < start {
                pieces.push((s, start, d));
            }
            if at < s.max(start) {
                pieces.push((at, s.max(start), depth));
            }
            pieces.push((s.max(start), e.min(end), d.max(depth)));
            if e > end {
                pieces.push((end, e, d));
            }
            at = e.min(end).max(at);
        }
        if at < end {
            pieces.push((at, end, depth));
        }
        for (s, e, d) in pieces {
            if s >= e {
                continue;
            }
            // Joined to the run before when it ends here at the same depth.
            let joined = runs
                .range(..s)
                .next_back()
                .filter(|(_, (prev_end, prev_depth))| *prev_end == s && *prev_depth == d)
                .map(|(&prev_start, _)| prev_start);
            runs.insert(joined.unwrap_or(s), (e, d));
        }
    }
}

#[cfg(test)]
mod tests;

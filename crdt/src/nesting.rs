//! How deep shared types nest in a document, known before yrs applies an
//! update. yrs deletes and collects nested types recursively, so a chain of
//! maps inside maps, built a few levels per update, would overflow a
//! thread's stack when its outermost map is deleted. The index keeps the
//! depth of every item (how many types contain it), as runs of clocks per
//! client, and refuses an update that would put an item deeper than the
//! limit. The list document needs four levels (an order's line's fields).

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

    /// Records an update applied without judging it (stored, or relayed by
    /// another replica that judged it).
    pub fn record(&mut self, update: &[u8]) {
        let limits = Limits {
            max_clients: usize::MAX,
            max_structs: usize::MAX,
            max_delete_ranges: usize::MAX,
            ..Limits::default()
        };
        if let Ok(depths) = self.resolve(update, &limits, &|_| true, false) {
            self.insert_all(&depths);
        }
    }

    /// Judges a client's update before it is applied and records it when
    /// it passes. `holds(id)` says whether the document holds the struct
    /// `id` (it may have been collected since).
    pub fn admit(
        &mut self,
        update: &[u8],
        limits: &Limits,
        holds: &dyn Fn(Id) -> bool,
    ) -> Result<(), NestingError> {
        let depths = self.resolve(update, limits, holds, true)?;
        if let Some(deepest) = depths.iter().map(|(_, d)| *d).max()
            && deepest > self.max_depth
        {
            return Err(NestingError::TooDeep(self.max_depth));
        }
        self.insert_all(&depths);
        Ok(())
    }

    /// The depth of every item of `update`, resolved through the index and
    /// the update itself with an explicit stack (no recursion). With
    /// `judge`, deleting what the document does not hold is refused too: it
    /// would wait aside, unstored.
    fn resolve(
        &self,
        update: &[u8],
        limits: &Limits,
        holds: &dyn Fn(Id) -> bool,
        judge: bool,
    ) -> Result<Vec<(Struct, u32)>, NestingError> {
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
        let holds = |id: Id| holds(id) || carries(id);
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
                // its neighbour sits in.
                let (reference, below_it) = match refs.parent {
                    Some(None) => {
                        depth[top] = Some(1);
                        stack.pop();
                        continue;
                    }
                    Some(Some(parent)) => (parent, 1),
                    None => (
                        refs.origin
                            .or(refs.right_origin)
                            .expect("an item without a parent has a neighbour"),
                        0,
                    ),
                };
                match self.depth_of(reference, &structs, &mine, &depth) {
                    Found::Depth(d) => {
                        depth[top] = Some(d.saturating_add(below_it));
                        stack.pop();
                    }
                    Found::Pending(i) if !on_stack[i] => stack.push(i),
                    // A cycle (no valid update has one): yrs will refuse it.
                    Found::Pending(_) => {
                        depth[top] = Some(1);
                        stack.pop();
                    }
                    Found::Unknown if holds(reference) => {
                        // Held but not indexed: collected, and what builds on
                        // a collected struct is collected too.
                        depth[top] = Some(1);
                        stack.pop();
                    }
                    Found::Unknown => return Err(NestingError::NotYetHere),
                }
            }
        }
        Ok(structs
            .into_iter()
            .zip(depth)
            .map(|(s, d)| (s, d.unwrap_or(1)))
            .collect())
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

    /// Records `[start, end)` of `client` at `depth`, where not recorded yet.
    fn insert(&mut self, client: u64, start: u32, end: u32, depth: u32) {
        let runs = self.runs.entry(client).or_default();
        let mut at = start;
        while at < end {
            if let Some((_, &(covered_to, _))) = runs.range(..=at).next_back()
                && at < covered_to
            {
                at = covered_to;
                continue;
            }
            let gap_end = runs
                .range(at + 1..)
                .next()
                .map_or(end, |(&next, _)| next.min(end));
            // Joined to the run before when it ends here at the same depth.
            let joined = runs
                .range(..at)
                .next_back()
                .filter(|(_, (prev_end, prev_depth))| *prev_end == at && *prev_depth == depth)
                .map(|(&prev_start, _)| prev_start);
            match joined {
                Some(prev_start) => {
                    runs.insert(prev_start, (gap_end, depth));
                }
                None => {
                    runs.insert(at, (gap_end, depth));
                }
            }
            at = gap_end;
        }
    }
}

#[cfg(test)]
mod tests;

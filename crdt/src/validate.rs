//! Bounded checks of what a client sends, run before yrs decodes it.
//!
//! yrs decodes nested `Any` values recursively and reserves memory for the
//! counts an encoding declares, so a few hundred kilobytes can overflow a
//! thread's stack and a few bytes can ask for gigabytes. Every function here
//! walks an encoding exactly as yrs 0.28's v1 decoder reads it, with the
//! same primitive reads, but iteratively: nesting is counted on a small
//! explicit stack, every declared count must fit in the bytes that remain
//! (each element takes at least one byte), and clocks must not overflow.
//! Nothing is allocated in proportion to a number the client wrote.
//!
//! Only bytes that pass are handed to yrs.

use yrs::encoding::read::{Cursor, Read};

/// What a client's message may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of `Any` arrays and maps, and of JSON inside strings.
    pub max_depth: usize,
    /// Most clients (writers) one update or state vector may name.
    pub max_clients: usize,
    /// Most structs (blocks) one update may carry.
    pub max_structs: usize,
    /// Most delete-set ranges one update may carry.
    pub max_delete_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_clients: 16_384,
            max_structs: 262_144,
            max_delete_ranges: 262_144,
        }
    }
}

/// Why a message was refused; the text goes into the close reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("truncated or malformed encoding at byte {0}")]
    Malformed(usize),
    #[error("nesting deeper than {0}")]
    TooDeep(usize),
    #[error("a declared count is larger than the message")]
    CountTooLarge,
    #[error("more than {0} clients")]
    TooManyClients(usize),
    #[error("more than {0} structs")]
    TooManyStructs(usize),
    #[error("more than {0} deleted ranges")]
    TooManyDeleteRanges(usize),
    #[error("a clock overflows")]
    ClockOverflow,
    #[error("a client id wider than 53 bits")]
    ClientTooLarge,
    #[error("a client's structs given twice")]
    DuplicateClient,
    #[error("subdocuments are not supported")]
    Subdocument,
    #[error("unknown content kind {0}")]
    UnknownContent(u8),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Highest clock a struct may reach. Yjs clocks stay far below it; yrs
/// computes clock offsets in `i32`, which overflows past it.
pub const MAX_CLOCK: u32 = i32::MAX as u32;

/// Client ids are 53-bit (safe as JavaScript numbers); yrs asserts it.
pub const MAX_CLIENT: u64 = (1 << 53) - 1;

/// `start + len`, refused past [`MAX_CLOCK`].
fn clock_end(start: u32, len: u32) -> Result<u32, Invalid> {
    start
        .checked_add(len)
        .filter(|end| *end <= MAX_CLOCK)
        .ok_or(Invalid::ClockOverflow)
}

/// What a valid update holds, for accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateShape {
    pub clients: usize,
    pub structs: usize,
    pub delete_ranges: usize,
}

// Block kinds (yrs `block.rs`).
const GC: u8 = 0;
const DELETED: u8 = 1;
const JSON: u8 = 2;
const BINARY: u8 = 3;
const STRING: u8 = 4;
const EMBED: u8 = 5;
const FORMAT: u8 = 6;
const TYPE: u8 = 7;
const ANY: u8 = 8;
const DOC: u8 = 9;
const SKIP: u8 = 10;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
// Type refs (yrs `types/mod.rs`); 7 (weak links) is off in our build.
const TYPE_XML_ELEMENT: u8 = 3;
const TYPE_SUBDOC: u8 = 9;
const TYPE_UNDEFINED: u8 = 15;

struct Reader<'a> {
    cursor: Cursor<'a>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            cursor: Cursor::new(bytes),
        }
    }

    fn offset(&self) -> usize {
        self.cursor.next
    }

    fn remaining(&self) -> usize {
        self.cursor.buf.len() - self.cursor.next
    }

    fn malformed(&self) -> Invalid {
        Invalid::Malformed(self.offset())
    }

    fn u8(&mut self) -> Result<u8, Invalid> {
        self.cursor.read_u8().map_err(|_| self.malformed())
    }

    fn var_u32(&mut self) -> Result<u32, Invalid> {
        self.cursor.read_var::<u32>().map_err(|_| self.malformed())
    }

    fn var_u64(&mut self) -> Result<u64, Invalid> {
        self.cursor.read_var::<u64>().map_err(|_| self.malformed())
    }

    fn client(&mut self) -> Result<u64, Invalid> {
        let client = self.var_u64()?;
        if client > MAX_CLIENT {
            return Err(Invalid::ClientTooLarge);
        }
        Ok(client)
    }

    /// lib0's signed varint. yrs's own reader shifts past 63 bits and
    /// negates `i64::MIN` on some inputs (a panic with overflow checks), so
    /// this one refuses what does not fit an `i64` instead.
    fn var_i64(&mut self) -> Result<i64, Invalid> {
        let at = self.offset();
        let first = self.u8()?;
        let mut magnitude = u64::from(first & 0b0011_1111);
        let mut shift = 6u32;
        let mut byte = first;
        while byte & 0b1000_0000 != 0 {
            byte = self.u8()?;
            let bits = u64::from(byte & 0b0111_1111);
            if shift > 62 || (shift > 0 && bits.leading_zeros() < shift) {
                return Err(Invalid::Malformed(at));
            }
            magnitude |= bits << shift;
            shift += 7;
        }
        let value = i64::try_from(magnitude).map_err(|_| Invalid::Malformed(at))?;
        Ok(if first & 0b0100_0000 != 0 {
            -value
        } else {
            value
        })
    }

    fn exact(&mut self, len: usize) -> Result<&'a [u8], Invalid> {
        if len > self.remaining() {
            return Err(self.malformed());
        }
        let start = self.cursor.next;
        self.cursor.next += len;
        Ok(&self.cursor.buf[start..start + len])
    }

    fn buf(&mut self) -> Result<&'a [u8], Invalid> {
        let len = self.var_u32()? as usize;
        self.exact(len)
    }

    fn string(&mut self) -> Result<&'a str, Invalid> {
        let at = self.offset();
        let bytes = self.buf()?;
        std::str::from_utf8(bytes).map_err(|_| Invalid::Malformed(at))
    }

    /// A count of elements that each take at least `min_bytes`: refused when
    /// the rest of the message could not hold them.
    fn count(&self, declared: u64, min_bytes: usize) -> Result<usize, Invalid> {
        let fits = (self.remaining() / min_bytes.max(1)) as u64;
        if declared > fits {
            return Err(Invalid::CountTooLarge);
        }
        Ok(declared as usize)
    }

    fn finish(&self) -> Result<(), Invalid> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(Invalid::Trailing(n)),
        }
    }
}

/// A struct's id: client and clock.
pub type Id = (u64, u32);

/// One struct of a checked update, for [`walk_update`]'s visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Struct {
    pub client: u64,
    pub clock: u32,
    pub len: u32,
    /// `None` for a collected (GC) range: no content, no parent.
    pub item: Option<ItemRefs>,
}

/// What an item refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRefs {
    pub origin: Option<Id>,
    pub right_origin: Option<Id>,
    /// Written only when the item has no neighbours to take it from:
    /// `None` is a root type, `Some(id)` the type item `id`.
    pub parent: Option<Option<Id>>,
    /// The item holds a type (a map, array, text...), which items can nest in.
    pub is_type: bool,
}

/// Checks a v1 update (sync step 2 or update body).
pub fn check_update(bytes: &[u8], limits: &Limits) -> Result<UpdateShape, Invalid> {
    walk_update(bytes, limits, |_| {})
}

/// What [`walk_update`] shows its visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A struct the update carries (not a skipped range, not one of length 0).
    Struct(Struct),
    /// A range of the delete set.
    Deleted { client: u64, clock: u32, len: u32 },
}

/// [`check_update`], showing `visit` every struct that yrs keeps and every
/// deleted range.
pub fn walk_update(
    bytes: &[u8],
    limits: &Limits,
    mut visit: impl FnMut(Seen),
) -> Result<UpdateShape, Invalid> {
    let mut r = Reader::new(bytes);
    let mut shape = UpdateShape::default();
    // Each client takes at least 3 bytes: block count, id, clock.
    let declared = r.var_u32()?;
    let clients = r.count(u64::from(declared), 3)?;
    if clients > limits.max_clients {
        return Err(Invalid::TooManyClients(limits.max_clients));
    }
    shape.clients = clients;
    // yrs appends a repeated client's structs to the first run with its
    // clock started again: overlapping blocks that corrupt its block store.
    let mut seen = std::collections::HashSet::with_capacity(clients.min(64));
    for _ in 0..clients {
        let declared = r.var_u32()?;
        let blocks = r.count(u64::from(declared), 1)?;
        shape.structs += blocks;
        if shape.structs > limits.max_structs {
            return Err(Invalid::TooManyStructs(limits.max_structs));
        }
        let client = r.client()?;
        if !seen.insert(client) {
            return Err(Invalid::DuplicateClient);
        }
        let mut clock = clock_end(r.var_u32()?, 0)?;
        for _ in 0..blocks {
            let (len, item, is_skip) = check_block(&mut r, limits)?;
            if len > 0 && !is_skip {
                visit(Seen::Struct(Struct {
                    client,
                    clock,
                    len,
                    item,
                }));
            }
            clock = clock_end(clock, len)?;
        }
    }
    shape.delete_ranges = check_delete_set(&mut r, limits, &mut visit)?;
    r.finish()?;
    Ok(shape)
}

/// One block; returns the clock length yrs gives it (0 for a block it
/// drops), for an item what it refers to, and whether it is a skip (a range
/// the update does not carry).
fn check_block(
    r: &mut Reader<'_>,
    limits: &Limits,
) -> Result<(u32, Option<ItemRefs>, bool), Invalid> {
    let info = r.u8()?;
    match info {
        SKIP | GC => {
            let len = r.var_u32()?;
            if len == 0 {
                return Err(r.malformed());
            }
            return Ok((len, None, info == SKIP));
        }
        _ => {}
    }
    let origin = if info & HAS_ORIGIN != 0 {
        Some(check_id(r)?)
    } else {
        None
    };
    let right_origin = if info & HAS_RIGHT_ORIGIN != 0 {
        Some(check_id(r)?)
    } else {
        None
    };
    let mut parent = None;
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        parent = Some(if r.var_u32()? == 1 {
            r.string()?;
            None
        } else {
            Some(check_id(r)?)
        });
        if info & HAS_PARENT_SUB != 0 {
            r.string()?;
        }
    }
    let kind = info & 0b1111;
    let len = check_content(r, kind, limits)?;
    let refs = ItemRefs {
        origin,
        right_origin,
        parent,
        is_type: kind == TYPE,
    };
    Ok((len, Some(refs), false))
}

/// An id another struct refers to: client and clock.
fn check_id(r: &mut Reader<'_>) -> Result<Id, Invalid> {
    let client = r.client()?;
    let clock = clock_end(r.var_u32()?, 0)?;
    Ok((client, clock))
}

/// Item content; returns its length in clock units.
fn check_content(r: &mut Reader<'_>, kind: u8, limits: &Limits) -> Result<u32, Invalid> {
    match kind {
        DELETED => r.var_u32(),
        JSON => {
            // yrs reads one string more than the count it is given.
            let declared = r.var_u32()?;
            if declared > i32::MAX as u32 {
                return Err(Invalid::CountTooLarge);
            }
            let strings = r.count(u64::from(declared) + 1, 1)?;
            for _ in 0..strings {
                check_json_depth(r.string()?, limits.max_depth)?;
            }
            Ok(strings as u32)
        }
        BINARY => {
            r.buf()?;
            Ok(1)
        }
        STRING => {
            let s = r.string()?;
            Ok(s.encode_utf16().count() as u32)
        }
        EMBED => {
            check_json_depth(r.string()?, limits.max_depth)?;
            Ok(1)
        }
        FORMAT => {
            r.string()?;
            check_json_depth(r.string()?, limits.max_depth)?;
            Ok(1)
        }
        TYPE => {
            match r.u8()? {
                TYPE_XML_ELEMENT => {
                    r.string()?;
                }
                TYPE_SUBDOC => return Err(Invalid::Subdocument),
                0..=6 | TYPE_UNDEFINED => {}
                other => return Err(Invalid::UnknownContent(other)),
            }
            Ok(1)
        }
        ANY => {
            let declared = r.var_u32()?;
            let values = r.count(u64::from(declared), 1)?;
            for _ in 0..values {
                check_any(r, limits.max_depth)?;
            }
            Ok(values as u32)
        }
        // A subdocument costs a whole document's memory for a few bytes, and
        // lists have no use for one.
        DOC => Err(Invalid::Subdocument),
        other => Err(Invalid::UnknownContent(other)),
    }
}

/// One lib0 `Any` value, nested arrays and maps counted on an explicit
/// stack of remaining element counts.
fn check_any(r: &mut Reader<'_>, max_depth: usize) -> Result<(), Invalid> {
    // (elements left, whether they are map entries with a key first)
    let mut stack: Vec<(usize, bool)> = Vec::new();
    loop {
        if let Some(top) = stack.last_mut() {
            if top.0 == 0 {
                stack.pop();
                if stack.is_empty() {
                    return Ok(());
                }
                continue;
            }
            top.0 -= 1;
            if top.1 {
                r.string()?;
            }
        }
        match r.u8()? {
            127 | 126 | 121 | 120 => {}
            125 => {
                r.var_i64()?;
            }
            124 => {
                r.exact(4)?;
            }
            123 | 122 => {
                r.exact(8)?;
            }
            119 => {
                r.string()?;
            }
            116 => {
                r.buf()?;
            }
            tag @ (118 | 117) => {
                let is_map = tag == 118;
                // A map entry is a key and a value: two bytes at least.
                let declared = r.var_u64()?;
                let len = r.count(declared, if is_map { 2 } else { 1 })?;
                if stack.len() >= max_depth {
                    return Err(Invalid::TooDeep(max_depth));
                }
                stack.push((len, is_map));
                continue;
            }
            _ => return Err(r.malformed()),
        }
        if stack.is_empty() {
            return Ok(());
        }
    }
}

/// A delete set; returns its number of ranges.
fn check_delete_set(
    r: &mut Reader<'_>,
    limits: &Limits,
    visit: &mut impl FnMut(Seen),
) -> Result<usize, Invalid> {
    // Each client takes at least 2 bytes: id and range count.
    let declared = r.var_u32()?;
    let clients = r.count(u64::from(declared), 2)?;
    if clients > limits.max_clients {
        return Err(Invalid::TooManyClients(limits.max_clients));
    }
    let mut total = 0usize;
    for _ in 0..clients {
        let client = r.client()?;
        // Each range takes at least 2 bytes: clock and length.
        let declared = r.var_u32()?;
        let ranges = r.count(u64::from(declared), 2)?;
        total += ranges;
        if total > limits.max_delete_ranges {
            return Err(Invalid::TooManyDeleteRanges(limits.max_delete_ranges));
        }
        for _ in 0..ranges {
            let clock = r.var_u32()?;
            let len = r.var_u32()?;
            clock_end(clock, len)?;
            if len > 0 {
                visit(Seen::Deleted { client, clock, len });
            }
        }
    }
    Ok(total)
}

/// Checks a v1 state vector (sync step 1 body); returns its client count.
pub fn check_state_vector(bytes: &[u8], limits: &Limits) -> Result<usize, Invalid> {
    let mut r = Reader::new(bytes);
    let declared = r.var_u32()?;
    let clients = r.count(u64::from(declared), 2)?;
    if clients > limits.max_clients {
        return Err(Invalid::TooManyClients(limits.max_clients));
    }
    for _ in 0..clients {
        r.client()?;
        r.var_u32()?;
    }
    r.finish()?;
    Ok(clients)
}

/// One client's entry of a presence (awareness) update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceEntry {
    pub client: u64,
    pub clock: u32,
    /// Bytes of the JSON state.
    pub state_bytes: usize,
    /// The state is `null`: the client left.
    pub is_removal: bool,
}

/// Checks a v1 awareness update and lists its entries (bounded by the
/// message's bytes: each entry takes at least three).
pub fn check_awareness(bytes: &[u8], limits: &Limits) -> Result<Vec<PresenceEntry>, Invalid> {
    let mut r = Reader::new(bytes);
    let declared = r.var_u64()?;
    let len = r.count(declared, 3)?;
    let mut entries = Vec::with_capacity(len.min(64));
    for _ in 0..len {
        let client = r.client()?;
        let clock = r.var_u32()?;
        let json = r.string()?;
        check_json_depth(json, limits.max_depth)?;
        entries.push(PresenceEntry {
            client,
            clock,
            state_bytes: json.len(),
            is_removal: json == "null",
        });
    }
    r.finish()?;
    Ok(entries)
}

/// Refuses JSON text nested deeper than `max_depth` (brackets outside
/// strings); whether it parses is left to the parser, whose recursion this
/// bounds.
pub fn check_json_depth(json: &str, max_depth: usize) -> Result<(), Invalid> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Invalid::TooDeep(max_depth));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Fractional indexes for the `position` field: strings that sort between
//! any two others, so an item can be moved by writing one field (no array
//! moves, which duplicate under concurrency).
//!
//! Digits are `0-9A-Za-z` in ASCII order; a key never ends with `0`, which
//! guarantees that a key exists between any two distinct keys.

const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE: usize = DIGITS.len();

fn digit(c: u8) -> Option<usize> {
    DIGITS.iter().position(|d| *d == c)
}

/// Whether `key` is a valid fractional index (clients may write anything).
pub fn is_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|c| digit(c).is_some()) && !key.ends_with('0')
}

/// A key that sorts strictly between `before` and `after` (either may be
/// open). `None` when a bound is not a valid key or `before >= after`.
pub fn between(before: Option<&str>, after: Option<&str>) -> Option<String> {
    if before.is_some_and(|k| !is_key(k)) || after.is_some_and(|k| !is_key(k)) {
        return None;
    }
    if let (Some(a), Some(b)) = (before, after)
        && a >= b
    {
        return None;
    }
    let mut out = Vec::new();
    midpoint(
        before.unwrap_or("").as_bytes(),
        after.map(str::as_bytes),
        &mut out,
    );
    Some(String::from_utf8(out).expect("digits are ASCII"))
}

/// Appends to `out` a key between `a` and `b` (`b = None` is the top).
fn midpoint(a: &[u8], b: Option<&[u8]>, out: &mut Vec<u8>) {
    if let Some(b) = b {
        // Keep the common prefix (a padded with zeros).
        let n = b
            .iter()
            .enumerate()
            .take_while(|(i, c)| a.get(*i).copied().unwrap_or(b'0') == **c)
            .count();
        if n > 0 {
            out.extend_from_slice(&b[..n]);
            return midpoint(a.get(n..).unwrap_or(&[]), Some(&b[n..]), out);
        }
    }
    let da = a.first().and_then(|c| digit(*c)).unwrap_or(0);
    let db = b
        .and_then(|b| b.first())
        .and_then(|c| digit(*c))
        .unwrap_or(BASE);
    if db - da > 1 {
        out.push(DIGITS[(da + db) / 2]);
    } else if let Some(b) = b.filter(|b| b.len() > 1) {
        out.push(b[0]);
    } else {
        out.push(DIGITS[da]);
        midpoint(a.get(1..).unwrap_or(&[]), None, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_key_is_in_the_middle() {
        assert_eq!(between(None, None).as_deref(), Some("V"));
    }

    #[test]
    fn invalid_bounds_are_refused() {
        assert_eq!(between(Some("b"), Some("a")), None);
        assert_eq!(between(Some("a0"), None), None);
        assert_eq!(between(Some("a-b"), None), None);
    }

    #[test]
    fn repeated_inserts_at_the_front_stay_ordered() {
        let mut first = between(None, None).expect("valid");
        for _ in 0..200 {
            let next = between(None, Some(&first)).expect("valid");
            assert!(next < first, "{next} < {first}");
            first = next;
        }
    }

    proptest! {
        #[test]
        fn a_key_always_fits_between_two_keys(steps in proptest::collection::vec(any::<(bool, u8)>(), 1..60)) {
            let mut keys = vec![between(None, None).expect("valid")];
            for (at_end, pick) in steps {
                keys.sort();
                let i = pick as usize % (keys.len() + 1);
                let lo = if i == 0 { None } else { Some(keys[i - 1].as_str()) };
                let hi = if at_end || i == keys.len() { None.or(keys.get(i).map(|s| s.as_str())) } else { Some(keys[i].as_str()) };
                let key = between(lo, hi).expect("bounds are valid keys");
                if let Some(lo) = lo { prop_assert!(lo < key.as_str()); }
                if let Some(hi) = hi { prop_assert!(key.as_str() < hi); }
                prop_assert!(is_key(&key));
                keys.push(key);
            }
        }
    }
}

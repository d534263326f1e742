//! Validation helpers shared by the body types.

/// A name people type: trimmed non-empty, at most `max` characters,
/// no control characters.
pub fn name(field: &str, value: &str, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > max {
        return Err(format!(
            "{field} must be 1 to {max} characters and not blank"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// A plausible email address (the mailbox is not contacted).
pub fn email(value: &str) -> Result<(), String> {
    let ok = (3..=254).contains(&value.len())
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && value.split('@').count() == 2
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(())
    } else {
        Err("email must be an address like name@example.com".to_owned())
    }
}

/// A password: 8 to 128 characters.
pub fn password(value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if (8..=128).contains(&chars) {
        Ok(())
    } else {
        Err("password must be 8 to 128 characters".to_owned())
    }
}

/// Longest free-text field (quantity, category, note), in characters.
pub const MAX_TEXT: usize = 500;

/// An optional free text: at most [`MAX_TEXT`] characters, no control
/// characters but newlines.
pub fn text(field: &str, value: &Option<String>) -> Result<(), String> {
    match value {
        Some(v)
            if v.chars().count() > MAX_TEXT || v.chars().any(|c| c.is_control() && c != '\n') =>
        {
            Err(format!(
                "{field} must be at most {MAX_TEXT} characters without control characters"
            ))
        }
        _ => Ok(()),
    }
}

/// A WhatsApp number in E.164 (`+447700900123`; spaces, dashes, dots and
/// brackets allowed, `00` for `+`), as the digits the API takes.
pub fn e164(field: &str, value: &str) -> Result<String, String> {
    let compact: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))
        .unwrap_or("");
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(digits.to_owned())
    } else {
        Err(format!(
            "{field} must be an international number in E.164 form, like +447700900123"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super as check;

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["a@b.co", "ann.smith+list@example.org"] {
            assert!(check::email(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", "@b.co", "a@b", "a@@b.co", "a b@c.de", "a@.co", "a@b.co.",
        ] {
            assert!(check::email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whatsapp_numbers_are_normalised_to_e164_digits() {
        assert_eq!(check::e164("n", "+44 7700 900123").unwrap(), "447700900123");
        assert_eq!(
            check::e164("n", "0044 (7700) 900-123").unwrap(),
            "447700900123"
        );
        assert_eq!(check::e164("n", "+1.415.555.0100").unwrap(), "14155550100");
        for bad in [
            "447700900123",
            "+0447700900123",
            "+44 7700 900123 ext 1",
            "+123",
            "+1234567890123456",
            "",
            "+",
            "+４４７７００９００１２３",
        ] {
            assert!(check::e164("n", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_passwords_have_bounds() {
        assert!(check::name("name", "Weekly shop", 100).is_ok());
        assert!(check::name("name", "   ", 100).is_err());
        assert!(check::name("name", &"x".repeat(101), 100).is_err());
        assert!(check::name("name", "tab\there", 100).is_err());
        assert!(check::password("short").is_err());
        assert!(check::password("long enough").is_ok());
        assert!(check::password(&"p".repeat(129)).is_err());
    }
}

//! Validation of object identifiers (namespaces, containers, leases), with
//! containerd's rule: alphanumeric runs joined by single `.`, `_` or `-`, at
//! most 76 characters.

/// Longest identifier accepted.
pub const MAX_LENGTH: usize = 76;

/// Checks `id`; the error text says what is wrong and what is allowed.
pub fn validate(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("identifier must not be empty".into());
    }
    if id.len() > MAX_LENGTH {
        return Err(format!(
            "identifier {id:?} greater than maximum length ({MAX_LENGTH} characters)"
        ));
    }
    let mut prev_sep = true; // a leading separator is as bad as a doubled one
    for c in id.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return Err(format!(
                "identifier {id:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
            ));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(format!(
            "identifier {id:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["default", "k8s.io", "a-b_c.d", "A1"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "a b", &"x".repeat(77)] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}

//! Keeps secret-looking values out of error text. Parse and validation errors go to the status
//! document in KV and to `validate` output, and serde quotes the offending value, so a private
//! key pasted into `tls.certificates` or an htpasswd line put where a reference belongs would
//! otherwise be echoed to everyone who can read the status.

use super::FieldError;

/// What replaces a removed value.
pub const SCRUBBED: &str = "<value>";

/// Quoted values longer than this are never echoed: nothing useful for a reader is that long,
/// and base64 key material without its PEM header is.
const MAX_ECHOED_CHARS: usize = 64;

/// Whether `text` carries something shaped like a secret: a PEM block, or a password hash in
/// one of the formats htpasswd, Traefik or Caddy accept.
pub fn looks_secret(text: &str) -> bool {
    const MARKERS: [&str; 11] = [
        "-----BEGIN",
        "PRIVATE KEY",
        "$apr1$",
        "$2a$",
        "$2b$",
        "$2y$",
        "$argon2",
        "{SHA}",
        "$1$",
        "$5$",
        "$6$",
    ];
    MARKERS.iter().any(|m| text.contains(m))
}

/// Whether a field path holds secrets or references to them.
fn sensitive_path(path: &str) -> bool {
    // Basic auth and forward auth sit under `spec.middlewares` and under every policy set.
    path.contains(".basicAuth") || path.contains(".forwardAuth") || path.starts_with("spec.tls")
}

/// `error` with every quoted value that could be a secret replaced by [`SCRUBBED`].
pub fn scrub(mut error: FieldError) -> FieldError {
    let sensitive = sensitive_path(&error.path);
    error.message = scrub_text(&error.message, sensitive);
    if looks_secret(&error.path) {
        error.path = SCRUBBED.to_string();
    }
    error
}

/// [`scrub`] for free text (syntax errors) that names no field.
pub fn scrub_text(message: &str, sensitive: bool) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let body_start = start + 1;
        let Some(len) = closing_quote(&rest[body_start..], quote) else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        out.push_str(&rest[..start]);
        if hide(body, sensitive) {
            out.push(quote);
            out.push_str(SCRUBBED);
            out.push(quote);
        } else {
            out.push_str(&rest[start..body_start + len + 1]);
        }
        rest = &rest[body_start + len + 1..];
    }
    out.push_str(rest);
    if looks_secret(&out) {
        // Unquoted (or unbalanced) secret text: drop the message rather than risk it.
        return format!(
            "the value was removed from this message because it looks like a secret ({SCRUBBED})"
        );
    }
    out
}

fn hide(body: &str, sensitive: bool) -> bool {
    looks_secret(body)
        || body.chars().count() > MAX_ECHOED_CHARS
        // An htpasswd line (`user:secret`, no spaces) where a reference or path belongs.
        || (sensitive && (body.contains('$') || (body.contains(':') && !body.contains(' '))))
}

/// Byte length of the quoted body before its closing `quote`, honouring `\` escapes in
/// double-quoted (Debug-formatted) strings.
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if quote == '"' && escaped {
            escaped = false;
        } else if quote == '"' && c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly
mod tests {
    use super::*;

    #[test]
    fn quoted_pem_blocks_and_hashes_are_replaced_but_field_names_stay() {
        let e = scrub(FieldError::new(
            "spec.tls.certificates[0]",
            "invalid type: string \"-----BEGIN PRIVATE KEY-----\\nMIIE\\\"x\", expected struct `CertificateFiles`",
        ));
        assert!(!e.message.contains("BEGIN"), "{}", e.message);
        assert!(!e.message.contains("MIIE"), "{}", e.message);
        assert!(e.message.contains("`CertificateFiles`"), "{}", e.message);
        let e = scrub(FieldError::new(
            "spec.middlewares.basicAuth.usersFrom",
            "unknown variant `alice:$apr1$SENTINEL$x`, expected `consulKey` or `file`",
        ));
        assert!(!e.message.contains("SENTINEL"), "{}", e.message);
        assert!(e.message.contains("`consulKey`"), "{}", e.message);
    }

    #[test]
    fn short_harmless_values_are_still_echoed() {
        let e = scrub(FieldError::new(
            "spec.middlewares.ipAllowList.sourceRange[2]",
            "\"10.0.0.300/8\" is not a CIDR",
        ));
        assert_eq!(e.message, "\"10.0.0.300/8\" is not a CIDR");
    }

    #[test]
    fn an_unquoted_secret_drops_the_whole_message() {
        let e = scrub(FieldError::new("spec.x", "bad value $2y$10$SENTINEL here"));
        assert!(!e.message.contains("SENTINEL"), "{}", e.message);
    }
}

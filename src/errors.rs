//! Error messages said once: the text of an error chain without repeats,
//! and the innermost cause of a layered error.

/// The message of an error and its causes, each said once: a cause whose
/// text its parent already contains (`"cannot listen on ...: {source}"`) is
/// not repeated.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if msg.is_empty() || text.contains(&msg) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&msg);
    }
    text
}

/// The innermost cause of `e` ("Connection refused (os error 111)"): an
/// HTTP client's layers above it only repeat the URL and the attempt.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    root.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_its_parent_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let err = anyhow::Error::new(io).context("cannot listen on :80: address in use");
        assert_eq!(error_text(&err), "cannot listen on :80: address in use");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io).context("cannot read x.json");
        assert_eq!(error_text(&err), "cannot read x.json: no such file");
    }
}

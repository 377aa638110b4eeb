//! Credentials never reach logs or output files: a URL's user and password (`s3://KEY:SECRET@…`,
//! `https://user:pw@…`) are refused where a URL is taken, and masked in any text shown.

use crate::error::{Error, Result};

/// `text` with the user information of every URL in it (`scheme://USERINFO@host`) masked as
/// `***`.
pub fn credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', space or quote; user information ends at its
        // last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(a) => {
                out.push_str("***");
                rest = &tail[a..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Refuses a URL that carries a user or password: they would be seen in process lists, logs and
/// the files that record their inputs.
pub fn refuse_userinfo(url: &str) -> Result<()> {
    if credentials(url) != url {
        return Err(Error::Config(format!(
            "{}: a URL with a user or password is refused (it would reach logs and output files); give the credentials in the environment (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            credentials(url)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_are_masked_wherever_they_stand() {
        assert_eq!(
            credentials("error: s3://AKIA:SECRET@bucket/p: no such key"),
            "error: s3://***@bucket/p: no such key"
        );
        assert_eq!(
            credentials("from http://u:p@w@127.0.0.1:8765/w.h5 and https://h/x@y"),
            "from http://***@127.0.0.1:8765/w.h5 and https://h/x@y"
        );
        assert_eq!(credentials("no url here: a@b"), "no url here: a@b");
        assert!(refuse_userinfo("s3://bucket/prefix").is_ok());
        let e = refuse_userinfo("s3://KEY:hunter2@bucket")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2") && e.contains("environment"), "{e}");
    }
}

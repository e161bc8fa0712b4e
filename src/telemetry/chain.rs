//! An error with all its causes, for log lines.

use std::error::Error;
use std::fmt;

/// `outer: cause: root cause` on one line. `%e` alone shows only the outermost message, which
/// for most of our errors is "database failure" or "RabbitMQ failed" and says nothing of why.
///
/// Runs of ten or more digits are masked: a cause from a library may quote a value, and an
/// identity number must never reach a log line.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let message = e.to_string();
            // thiserror's `#[error(transparent)]` and `{0}` repeat their source's message.
            if !text.ends_with(&message) {
                text.push_str(": ");
                text.push_str(&message);
            }
            cause = e.source();
        }
        f.write_str(&redact_digit_runs(&text))
    }
}

/// Runs of ten or more digits become `<redacted>`: an identity number has eleven, an
/// organisation number nine. For anything that may quote input: log lines, error answers,
/// dead-letter reasons.
pub fn redact_digit_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii_digit() {
            run += 1;
            continue;
        }
        out.push_str(masked(&text[i - run..i], run));
        run = 0;
        out.push(c);
    }
    out.push_str(masked(&text[text.len() - run..], run));
    out
}

fn masked(digits: &str, run: usize) -> &str {
    if run >= 10 { "<redacted>" } else { digits }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("database failure")]
        Database(#[source] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the row for 15038512363 was refused: {0}")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn shows_every_cause_and_masks_long_digit_runs() {
        let e = Outer::Database(Inner(std::io::Error::other("connection reset by peer")));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "database failure: the row for <redacted> was refused: connection reset by peer"
        );
    }

    #[test]
    fn a_cause_repeated_by_its_wrapper_is_shown_once() {
        let io = std::io::Error::other("port 5432 closed");
        assert_eq!(ErrorChain(&Inner(io)).to_string(), {
            "the row for <redacted> was refused: port 5432 closed"
        });
    }
}

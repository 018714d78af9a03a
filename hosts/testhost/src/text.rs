//! A fixed-size text buffer: the test host has no allocator, yet builds
//! each RESULT line's detail piece by piece. Text past the capacity is
//! dropped and the line ends in `...`, so a long detail never overflows
//! and never hides the fact it was cut.

use core::fmt;

/// Up to `N` bytes of UTF-8 text.
#[derive(Clone)]
pub struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Line<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Line {
            buf: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// The text (ending in `...` if something was dropped).
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 sequences are ever copied in (see write_str).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<invalid utf-8>")
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget the contents.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }

    /// Append `s`, separated by "; " from what is already there.
    pub fn push_item(&mut self, args: fmt::Arguments) {
        if !self.is_empty() {
            let _ = fmt::Write::write_str(self, "; ");
        }
        let _ = fmt::Write::write_fmt(self, args);
    }
}

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            return Ok(());
        }
        const MARK: &[u8] = b"...";
        // Room for the mark is always kept back, so it can be added later.
        let limit = N.saturating_sub(MARK.len());
        if self.len + s.len() <= limit {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
            return Ok(());
        }
        // Keep what fits before the mark, cut at a character boundary.
        let mut keep = limit.saturating_sub(self.len).min(s.len());
        while keep > 0 && !s.is_char_boundary(keep) {
            keep -= 1;
        }
        self.buf[self.len..self.len + keep].copy_from_slice(&s.as_bytes()[..keep]);
        self.len += keep;
        let mark = MARK.len().min(N - self.len);
        self.buf[self.len..self.len + mark].copy_from_slice(&MARK[..mark]);
        self.len += mark;
        self.truncated = true;
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Line<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn fills_and_truncates() {
        let mut l = Line::<16>::new();
        write!(l, "abc {}", 12).unwrap();
        assert_eq!(l.as_str(), "abc 12");
        l.push_item(format_args!("x"));
        assert_eq!(l.as_str(), "abc 12; x");
        write!(l, "0123456789").unwrap();
        assert_eq!(l.as_str(), "abc 12; x0123...");
        assert_eq!(l.as_str().len(), 16);
        write!(l, "more").unwrap();
        assert_eq!(l.as_str(), "abc 12; x0123...");
        l.clear();
        write!(l, "ééééééééé").unwrap();
        assert!(l.as_str().ends_with("..."));
        assert!(l.as_str().len() <= 16);
    }
}

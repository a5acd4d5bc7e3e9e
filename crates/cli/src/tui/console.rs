//! The logs pane's text: what a guest printed to its console, made safe
//! for the terminal (as `vm logs` does), kept to a bounded number of
//! bounded lines. A guest that floods its console costs the TUI a fixed
//! amount of memory; the lines pushed out are counted and shown.

use std::collections::VecDeque;

use crate::terminal::TerminalSafe;

/// How many lines the pane keeps.
pub const MAX_LINES: usize = 5000;
/// How long one line may grow before it is cut (a guest that never
/// prints a newline).
pub const MAX_LINE_CHARS: usize = 2000;

pub struct ConsoleBuffer {
    filter: TerminalSafe,
    lines: VecDeque<String>,
    /// The last line, not ended yet.
    open: String,
    open_chars: usize,
    /// Lines pushed out to stay within [`MAX_LINES`].
    pub dropped: u64,
    max_lines: usize,
}

impl Default for ConsoleBuffer {
    fn default() -> Self {
        Self::with_capacity(MAX_LINES)
    }
}

impl ConsoleBuffer {
    pub fn with_capacity(max_lines: usize) -> Self {
        Self {
            filter: TerminalSafe::default(),
            lines: VecDeque::new(),
            open: String::new(),
            open_chars: 0,
            dropped: 0,
            max_lines: max_lines.max(1),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let mut text = String::new();
        self.filter.push(bytes, &mut text);
        for c in text.chars() {
            match c {
                '\n' => self.end_line(),
                // A tab's width is the terminal's business, and ratatui
                // would count it as one column.
                '\t' => self.push_char(' '),
                c => self.push_char(c),
            }
        }
    }

    fn push_char(&mut self, c: char) {
        if self.open_chars == MAX_LINE_CHARS {
            self.end_line();
        }
        self.open.push(c);
        self.open_chars += 1;
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.open);
        self.open_chars = 0;
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines {
            self.lines.pop_front();
            self.dropped += 1;
        }
    }

    /// How many lines there are to show, the open one included.
    pub fn len(&self) -> usize {
        self.lines.len() + usize::from(!self.open.is_empty())
    }

    /// `count` lines ending `from_bottom` lines above the last one.
    pub fn window(&self, count: usize, from_bottom: usize) -> Vec<&str> {
        let all: Vec<&str> = self
            .lines
            .iter()
            .map(String::as_str)
            .chain((!self.open.is_empty()).then_some(self.open.as_str()))
            .collect();
        let end = all.len().saturating_sub(from_bottom);
        let start = end.saturating_sub(count);
        all[start..end].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_counts_the_rest() {
        let mut b = ConsoleBuffer::with_capacity(3);
        for i in 0..10 {
            b.push(format!("line {i}\r\n").as_bytes());
        }
        assert_eq!(b.window(10, 0), ["line 7", "line 8", "line 9"]);
        assert_eq!(b.dropped, 7);
        assert_eq!(b.window(1, 1), ["line 8"]);
        assert_eq!(b.window(5, 100), Vec::<&str>::new());
    }

    #[test]
    fn escapes_are_shown_not_obeyed() {
        let mut b = ConsoleBuffer::default();
        b.push(b"\x1b]52;c;aGk=\x07evil\tx\n");
        assert_eq!(b.window(1, 0), ["^[]52;c;aGk=^Gevil x"]);
    }

    #[test]
    fn a_line_without_end_is_cut() {
        let mut b = ConsoleBuffer::with_capacity(10);
        b.push(&vec![b'a'; MAX_LINE_CHARS * 2 + 5]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.window(1, 0), ["aaaaa"]);
    }

    #[test]
    fn a_line_split_between_chunks_is_one_line() {
        let mut b = ConsoleBuffer::default();
        b.push(b"hel");
        b.push(b"lo\r");
        b.push(b"\nworld");
        assert_eq!(b.window(5, 0), ["hello", "world"]);
    }
}

//! Guest bytes made safe for the user's terminal.
//!
//! A guest writes whatever it likes to its console, and a terminal acts on
//! escape sequences: it can be made to retitle the window, rewrite the
//! clipboard (OSC 52), hide text or move the cursor over earlier lines. So
//! `vm logs` on a terminal shows every control character other than
//! newline and tab as a visible placeholder, in the caret notation of
//! `cat -v` and `less` (`ESC` is `^[`, a lone `\r` is `^M`), and the C1
//! controls and bidirectional overrides as `<U+XXXX>`. Bytes that are not
//! UTF-8 become U+FFFD. A `\r` right before `\n` (a serial console's line
//! end) is dropped instead, since it only ends the line.

/// What stands in for bytes that are not UTF-8.
const NOT_UTF8: &str = "\u{fffd}";

/// A filter over a byte stream that arrives in chunks: a UTF-8 sequence or
/// a `\r\n` split between two chunks is still seen whole.
#[derive(Default)]
pub struct TerminalSafe {
    /// The end of the last chunk that may continue in the next: an
    /// unfinished UTF-8 sequence, or a `\r`.
    carry: Vec<u8>,
}

impl TerminalSafe {
    /// Appends `chunk`'s safe rendering to `out`, holding back what the
    /// next chunk may complete.
    pub fn push(&mut self, chunk: &[u8], out: &mut String) {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let mut rest = bytes.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    if let Some(text) = text.strip_suffix('\r') {
                        render(text, out);
                        self.carry.push(b'\r');
                    } else {
                        render(text, out);
                    }
                    return;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Checked by from_utf8 just now.
                    render(std::str::from_utf8(valid).unwrap_or_default(), out);
                    match e.error_len() {
                        Some(bad) => {
                            out.push_str(NOT_UTF8);
                            rest = &after[bad..];
                        }
                        None => {
                            // A sequence the next chunk may finish.
                            self.carry.extend_from_slice(after);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The end of the stream: what was held back is rendered as it is.
    pub fn finish(&mut self, out: &mut String) {
        let carry = std::mem::take(&mut self.carry);
        for chunk in carry.utf8_chunks() {
            render(chunk.valid(), out);
            if !chunk.invalid().is_empty() {
                out.push_str(NOT_UTF8);
            }
        }
    }
}

/// Renders valid text: `\r\n` as `\n`, other controls as placeholders.
fn render(text: &str, out: &mut String) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' if chars.peek() == Some(&'\n') => {}
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            c if is_invisible_control(c) => {
                out.push_str(&format!("<U+{:04X}>", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// C1 controls (some terminals read U+009B as CSI) and the bidirectional
/// embeddings, overrides and isolates, which reorder what is shown.
fn is_invisible_control(c: char) -> bool {
    matches!(c, '\u{80}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The last lines of a byte stream, each cut to a bounded length, for
/// reading ssh's own errors after a session: memory stays small however
/// long a line the other side writes.
#[derive(Default)]
pub struct LineTail {
    lines: std::collections::VecDeque<Vec<u8>>,
    /// Whether the last line is still open (no newline yet).
    open: bool,
}

impl LineTail {
    /// How many lines are kept.
    const LINES: usize = 20;
    /// How many bytes of one line are kept; ssh's messages are far shorter.
    const LINE_BYTES: usize = 1024;

    pub fn push(&mut self, bytes: &[u8]) {
        let pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        for (i, piece) in pieces.iter().enumerate() {
            // After a final newline comes no line yet.
            if i > 0 && i == pieces.len() - 1 && piece.is_empty() {
                break;
            }
            let continues = i == 0 && self.open;
            if !continues {
                if self.lines.len() == Self::LINES {
                    self.lines.pop_front();
                }
                self.lines.push_back(Vec::new());
            }
            if let Some(line) = self.lines.back_mut() {
                let room = Self::LINE_BYTES.saturating_sub(line.len());
                line.extend_from_slice(&piece[..piece.len().min(room)]);
            }
        }
        // The piece after the last newline is the open line.
        if !bytes.is_empty() {
            self.open = bytes.last() != Some(&b'\n');
        }
    }

    /// The kept lines, joined by newlines.
    pub fn text(&self) -> String {
        let lines: Vec<_> = self
            .lines
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect();
        lines.join("\n")
    }
}

/// The whole of `bytes`, rendered at once.
#[cfg(test)]
fn safe(bytes: &[u8]) -> String {
    let mut filter = TerminalSafe::default();
    let mut out = String::new();
    filter.push(bytes, &mut out);
    filter.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_newlines_and_tabs_pass_unchanged() {
        let text = "Débian\tbookworm ✓\n[  OK  ] Started ssh.\n";
        assert_eq!(safe(text.as_bytes()), text);
    }

    #[test]
    fn escape_sequences_and_controls_become_visible() {
        // Colour, an OSC 52 clipboard write, a cursor move, a bell.
        let hostile = b"\x1b[0;32m OK \x1b[0m\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2A\x00\x7f";
        assert_eq!(
            safe(hostile),
            "^[[0;32m OK ^[[0m^[]52;c;cm0gLXJmIH4=^G^[[2A^@^?"
        );
        assert!(!safe(hostile).contains('\x1b'));
    }

    #[test]
    fn a_console_line_end_is_a_newline_and_a_lone_return_is_shown() {
        assert_eq!(safe(b"one\r\ntwo\rthree\r"), "one\ntwo^Mthree^M");
    }

    #[test]
    fn c1_controls_bidi_overrides_and_bad_bytes_are_replaced() {
        assert_eq!(
            safe("a\u{9b}31mb\u{202e}c".as_bytes()),
            "a<U+009B>31mb<U+202E>c"
        );
        assert_eq!(safe(b"x\xffy\xc3"), "x\u{fffd}y\u{fffd}");
    }

    #[test]
    fn sequences_split_between_chunks_are_seen_whole() {
        let text = "é\r\n→ done\r\n".as_bytes();
        for cut in 0..=text.len() {
            let mut filter = TerminalSafe::default();
            let mut out = String::new();
            filter.push(&text[..cut], &mut out);
            filter.push(&text[cut..], &mut out);
            filter.finish(&mut out);
            assert_eq!(out, "é\n→ done\n", "cut at {cut}");
        }
    }

    #[test]
    fn a_tail_keeps_the_last_lines_each_bounded() {
        let mut tail = LineTail::default();
        tail.push(b"first\nsec");
        tail.push(b"ond\n");
        assert_eq!(tail.text(), "first\nsecond");
        // A line that never ends, in many pieces, stays bounded.
        for _ in 0..10_000 {
            tail.push(&[b'x'; 1000]);
        }
        tail.push(b"\nssh: connect to host 172.16.0.5 port 22: Connection refused\n");
        let text = tail.text();
        assert!(text.len() < 2 * 1024, "{}", text.len());
        assert!(text.ends_with("\nssh: connect to host 172.16.0.5 port 22: Connection refused"));
        for i in 0..100 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(tail.text().lines().count(), 20);
        assert!(tail.text().ends_with("line 99"));
    }
}

//! A SQL tokenizer just deep enough to classify statements: it knows where comments,
//! strings, quoted identifiers and statement boundaries are, so that a `;` or a `FOR UPDATE`
//! inside a string or a comment is not mistaken for SQL.
//!
//! MariaDB's executable comments (`/*! ... */`, `/*!50110 ... */`, `/*M! ... */`) are SQL
//! to the server, so their content is tokenized as code. Double-quoted text is a string (the
//! default sql_mode; under ANSI_QUOTES it would be an identifier, which classifies the same).
//! Works on bytes: the text need not be valid UTF-8.

/// One token. Words keep their text (keywords and identifiers are told apart later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted keyword or identifier.
    Word(&'a [u8]),
    /// A backquoted identifier, without its quotes.
    Quoted(&'a [u8]),
    /// A string literal ('...' or "...").
    Str,
    Number,
    /// A user variable: `@name`, `@'name'`, `` @`name` ``; the text after `@`, quotes included.
    UserVar(&'a [u8]),
    /// A system variable: `@@name`, `@@session.name`; the text after `@@`.
    SysVar(&'a [u8]),
    /// `:=`
    Assign,
    /// Any other single character: `(`, `)`, `,`, `;`, `=`, `.`, `?` ...
    Punct(u8),
}

impl Token<'_> {
    /// True when this is the keyword `kw` (ASCII, case-insensitive).
    pub fn is(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw.as_bytes()))
    }

    /// The name an identifier token stands for (word or backquoted).
    pub fn ident(&self) -> Option<&[u8]> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w),
            _ => None,
        }
    }
}

/// Iterates over the tokens of `sql` with their byte offsets.
pub struct Tokenizer<'a> {
    sql: &'a [u8],
    pos: usize,
    /// Inside `/*! ... */`: the next `*/` closes it and is skipped.
    in_executable_comment: bool,
}

impl<'a> Tokenizer<'a> {
    pub fn new(sql: &'a [u8]) -> Self {
        Self {
            sql,
            pos: 0,
            in_executable_comment: false,
        }
    }

    fn peek(&self, ahead: usize) -> u8 {
        self.sql.get(self.pos + ahead).copied().unwrap_or(0)
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) {
        loop {
            let c = self.peek(0);
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else if c == b'#'
                || (c == b'-' && self.peek(1) == b'-' && is_space_or_end(self.peek(2)))
            {
                while self.pos < self.sql.len() && self.sql[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else if c == b'/' && self.peek(1) == b'*' {
                if self.peek(2) == b'!' || (self.peek(2) == b'M' && self.peek(3) == b'!') {
                    self.pos += if self.peek(2) == b'M' { 4 } else { 3 };
                    while self.peek(0).is_ascii_digit() {
                        self.pos += 1;
                    }
                    self.in_executable_comment = true;
                } else {
                    self.pos += 2;
                    while self.pos < self.sql.len()
                        && !(self.peek(0) == b'*' && self.peek(1) == b'/')
                    {
                        self.pos += 1;
                    }
                    self.pos = (self.pos + 2).min(self.sql.len());
                }
            } else if c == b'*' && self.peek(1) == b'/' && self.in_executable_comment {
                self.in_executable_comment = false;
                self.pos += 2;
            } else {
                return;
            }
        }
    }

    /// Skips a quoted run that starts at `pos` (the opening quote), honouring doubled quotes
    /// and, in strings, backslash escapes. Returns the content's range.
    fn quoted(&mut self, quote: u8, backslash: bool) -> (usize, usize) {
        let start = self.pos + 1;
        let mut i = start;
        while i < self.sql.len() {
            let c = self.sql[i];
            if backslash && c == b'\\' {
                i += 2;
            } else if c == quote {
                if self.sql.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    self.pos = i + 1;
                    return (start, i);
                }
            } else {
                i += 1;
            }
        }
        self.pos = self.sql.len();
        (start, self.sql.len().min(i))
    }
}

fn is_space_or_end(c: u8) -> bool {
    c == 0 || c.is_ascii_whitespace() || c.is_ascii_control()
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

impl<'a> Iterator for Tokenizer<'a> {
    /// The token and the offset of its first byte.
    type Item = (Token<'a>, usize);

    fn next(&mut self) -> Option<Self::Item> {
        self.skip_trivia();
        let start = self.pos;
        let c = *self.sql.get(self.pos)?;
        let token = match c {
            b'\'' | b'"' => {
                self.quoted(c, true);
                Token::Str
            }
            b'`' => {
                let (s, e) = self.quoted(b'`', false);
                Token::Quoted(&self.sql[s..e])
            }
            b'@' if self.peek(1) == b'@' => {
                self.pos += 2;
                let s = self.pos;
                while is_word_byte(self.peek(0)) || self.peek(0) == b'.' {
                    self.pos += 1;
                }
                Token::SysVar(&self.sql[s..self.pos])
            }
            b'@' => {
                self.pos += 1;
                let s = self.pos;
                match self.peek(0) {
                    q @ (b'\'' | b'"' | b'`') => {
                        self.quoted(q, q != b'`');
                    }
                    _ => {
                        while is_word_byte(self.peek(0)) || self.peek(0) == b'.' {
                            self.pos += 1;
                        }
                    }
                }
                Token::UserVar(&self.sql[s..self.pos])
            }
            b':' if self.peek(1) == b'=' => {
                self.pos += 2;
                Token::Assign
            }
            b'0'..=b'9' => {
                while is_word_byte(self.peek(0)) || self.peek(0) == b'.' {
                    self.pos += 1;
                }
                let text = &self.sql[start..self.pos];
                if text.iter().all(|b| b.is_ascii_digit() || *b == b'.')
                    || text.starts_with(b"0x")
                    || text.starts_with(b"0b")
                    || text.iter().any(|b| *b == b'e' || *b == b'E')
                {
                    Token::Number
                } else {
                    Token::Word(text)
                }
            }
            c if is_word_byte(c) => {
                // x'..', b'..', N'..', _utf8mb4'..': prefixed string literals.
                while is_word_byte(self.peek(0)) {
                    self.pos += 1;
                }
                let word = &self.sql[start..self.pos];
                let prefix = word.len() == 1 && b"xXbBnN".contains(&word[0]) || word[0] == b'_';
                if prefix && self.peek(0) == b'\'' {
                    self.quoted(b'\'', true);
                    Token::Str
                } else {
                    Token::Word(&self.sql[start..self.pos])
                }
            }
            _ => {
                self.pos += 1;
                Token::Punct(c)
            }
        };
        Some((token, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(sql: &str) -> Vec<Token<'_>> {
        Tokenizer::new(sql.as_bytes()).map(|(t, _)| t).collect()
    }

    #[test]
    fn comments_and_strings_hide_their_content() {
        let t = tokens("SELECT 'a;b' /* FOR UPDATE */ -- ; x\n, \"c\" # ;\n");
        assert_eq!(
            t,
            vec![
                Token::Word(b"SELECT"),
                Token::Str,
                Token::Punct(b','),
                Token::Str
            ]
        );
    }

    #[test]
    fn escapes_and_doubled_quotes_stay_inside_the_string() {
        assert_eq!(tokens(r"'it\'s'; 'a''b'").len(), 3);
        assert_eq!(tokens("`we``ird`")[0], Token::Quoted(b"we``ird"));
    }

    #[test]
    fn executable_comments_are_code() {
        let t = tokens("/*!40101 SET NAMES utf8 */; /*M!100100 SELECT 1 */");
        assert!(t[0].is("SET"));
        assert_eq!(t[3], Token::Punct(b';'));
        assert!(t[4].is("SELECT"));
    }

    #[test]
    fn variables_and_assignment() {
        let t = tokens("SET @a := @@session.sql_mode, @`b`=1");
        assert_eq!(t[1], Token::UserVar(b"a"));
        assert_eq!(t[2], Token::Assign);
        assert_eq!(t[3], Token::SysVar(b"session.sql_mode"));
        assert_eq!(t[5], Token::UserVar(b"`b`"));
    }

    /// An unterminated string, quoted name, variable name or comment runs to the end of the
    /// input: the tokens end there, and nothing after its opening (a `;`, a keyword) is code.
    #[test]
    fn unterminated_input_ends_cleanly() {
        for open in ["'", "\"", "`", "/*", "@'", "@`", "@@`"] {
            let sql = format!("SELECT x {open}; DELETE FROM t");
            let t = tokens(&sql);
            assert!(t[0].is("SELECT") && t[1].is("x"), "{sql}: {t:?}");
            assert!(
                !t.iter().any(|t| t.is("DELETE") || *t == Token::Punct(b';')),
                "{sql}: {t:?}"
            );
        }
        // An executable comment is code, to its end or the input's.
        let t = tokens("/*! SELECT");
        assert!(t.len() == 1 && t[0].is("SELECT"), "{t:?}");
    }
}

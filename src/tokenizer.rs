//! The character vocabulary of a corpus, as a Hugging Face `tokenizers` `Tokenizer`.
//!
//! One token per Unicode scalar value, id = row of `embedding.weight`. The model is a BPE
//! with no merges (so every character of the input is its own token, with no regular
//! expression to get wrong) and the decoder is `Fuse` (tokens are joined with nothing
//! between them), which together make `encode` then `decode` exact for any text made of
//! vocabulary characters: spaces, newlines, tabs and combining marks included.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::Tokenizer;

use crate::{input_error, Error, Result};

/// A character-level tokenizer backed by a Hugging Face `Tokenizer`.
///
/// ```
/// use chargru::CharTokenizer;
///
/// let tokenizer = CharTokenizer::from_text("hello world\n")?;
/// assert_eq!(tokenizer.vocab_size(), 9); // "\n", " ", d, e, h, l, o, r, w
/// let ids = tokenizer.encode("hold")?;
/// assert_eq!(tokenizer.decode(&ids)?, "hold");
/// assert!(tokenizer.encode("help").is_err()); // no 'p' in the vocabulary
/// // The same vocabulary, as the JSON document a checkpoint stores.
/// let again = CharTokenizer::from_json(&tokenizer.to_json()?)?;
/// assert_eq!(again.encode("hold")?, ids);
/// # Ok::<(), chargru::Error>(())
/// ```
#[derive(Clone)]
pub struct CharTokenizer {
    inner: Tokenizer,
    /// The same vocabulary as `inner`, kept to name the first unknown character of a text.
    ids: HashMap<char, u32>,
    /// `chars[id]` is the character of token `id`.
    chars: Vec<char>,
}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, ids in code point order.
    pub fn from_text(text: &str) -> Result<Self> {
        let distinct: BTreeSet<char> = text.chars().collect();
        Self::from_chars(distinct.into_iter().collect())
    }

    /// A tokenizer whose token `k` is `chars[k]`; the characters must be distinct.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        let vocab: Vocab = chars
            .iter()
            .enumerate()
            .map(|(id, c)| (c.to_string(), id as u32))
            .collect();
        if vocab.len() != chars.len() {
            input_error!("a character vocabulary must not list the same character twice");
        }
        // No cache: with no merges there is nothing to remember, and each cached BPE keeps
        // an entry in a thread-local map for the life of the thread.
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .cache_capacity(0)
            .build()
            .map_err(|e| Error::Input(format!("cannot build the character tokenizer: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_decoder(Some(Fuse::new()));
        Ok(Self::with_chars(inner, chars))
    }

    /// Reads the JSON document that [`CharTokenizer::to_json`] writes (SPEC's `chargru.tokenizer`).
    ///
    /// Any `tokenizers` JSON whose vocabulary is one character per token with ids `0..V`
    /// is accepted, and rebuilt as chargru's own tokenizer of that vocabulary, so encoding
    /// is exact whatever else the document configures.
    pub fn from_json(json: &str) -> Result<Self> {
        // tokenizers panics on some malformed documents (a syntax error inside the decoder,
        // a bad precompiled normalizer), so check what it would choke on first.
        let document: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Input(format!("the tokenizer is not valid JSON ({e})")))?;
        if !document
            .get("normalizer")
            .is_none_or(serde_json::Value::is_null)
        {
            input_error!("the tokenizer has a normalizer, which would change the text it encodes; a character tokenizer has none");
        }
        let inner = std::panic::catch_unwind(|| Tokenizer::from_str(json))
            .map_err(|_| Error::Input("the tokenizer JSON is malformed".into()))?
            .map_err(|e| {
                Error::Input(format!("the tokenizer is not valid tokenizers JSON ({e})"))
            })?;
        let mut chars = vec![None; inner.get_vocab_size(true)];
        for (token, id) in inner.get_vocab(true) {
            let mut it = token.chars();
            let (Some(c), None) = (it.next(), it.next()) else {
                input_error!("the tokenizer has a token {token:?} that is not one character");
            };
            match chars.get_mut(id as usize) {
                Some(slot @ None) => *slot = Some(c),
                _ => input_error!(
                    "the tokenizer's ids are not 0..{} without gaps",
                    chars.len()
                ),
            }
        }
        let chars: Option<Vec<char>> = chars.into_iter().collect();
        let Some(chars) = chars else {
            input_error!("the tokenizer's ids are not 0..V without gaps");
        };
        if chars.is_empty() {
            input_error!("the tokenizer has an empty vocabulary");
        }
        Self::from_chars(chars)
    }

    fn with_chars(inner: Tokenizer, chars: Vec<char>) -> Self {
        let ids = chars
            .iter()
            .enumerate()
            .map(|(id, &c)| (c, id as u32))
            .collect();
        Self { inner, ids, chars }
    }

    /// The `tokenizers` JSON document stored in a checkpoint's metadata.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| Error::Input(format!("cannot write the tokenizer as JSON: {e}")))
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Number of tokens, V.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// The characters of the vocabulary, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<u32> {
        self.ids.get(&c).copied()
    }

    /// The character of token `id`.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// Checks that every character of `text` is in the vocabulary: the position after the
    /// text when it is (counting from `start`), else the first unknown character and where it is.
    pub fn scan(
        &self,
        text: &str,
        start: TextPosition,
    ) -> std::result::Result<TextPosition, UnknownChar> {
        let mut position = start;
        for c in text.chars() {
            if !self.ids.contains_key(&c) {
                return Err(UnknownChar { ch: c, position });
            }
            position.advance(c);
        }
        Ok(position)
    }

    /// Token ids of `text`; a character outside the vocabulary is an error naming it and its position.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_from(text, TextPosition::default())
            .map(|(ids, _)| ids)
    }

    /// Token ids of `text`, a piece of a longer text starting at `start`, and the position after it.
    pub fn encode_from(&self, text: &str, start: TextPosition) -> Result<(Vec<u32>, TextPosition)> {
        let end = self.scan(text, start).map_err(|unknown| {
            Error::Input(format!(
                "{unknown} is not in the model's vocabulary; remove it or train on a corpus that contains it"
            ))
        })?;
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Input(format!("cannot tokenize the text: {e}")))?;
        Ok((encoding.get_ids().to_vec(), end))
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.chars.len()) {
            input_error!(
                "token id {bad} is outside the vocabulary of {} characters",
                self.chars.len()
            );
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Input(format!("cannot decode token ids: {e}")))
    }
}

/// A place in a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextPosition {
    /// Characters before it.
    pub index: usize,
    /// Its line, from 1.
    pub line: usize,
    /// Its column in that line, in characters, from 1.
    pub column: usize,
}

impl Default for TextPosition {
    fn default() -> Self {
        Self {
            index: 0,
            line: 1,
            column: 1,
        }
    }
}

impl TextPosition {
    /// Moves past `c`.
    pub fn advance(&mut self, c: char) {
        self.index += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
    }
}

/// A character missing from a vocabulary, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownChar {
    /// The character.
    pub ch: char,
    /// Where it is.
    pub position: TextPosition,
}

impl std::fmt::Display for UnknownChar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.position;
        write!(
            f,
            "character {:?} (U+{:04X}) at line {}, column {} (character {})",
            self.ch, self.ch as u32, p.line, p.column, p.index
        )
    }
}

//! The character tokenizer: exact round trips, unknown characters, JSON storage.

use chargru::CharTokenizer;

fn round_trip(text: &str) {
    let tokenizer = CharTokenizer::from_text(text).unwrap();
    let ids = tokenizer.encode(text).unwrap();
    assert_eq!(ids.len(), text.chars().count(), "one token per character");
    assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    let reloaded = CharTokenizer::from_json(&tokenizer.to_json().unwrap()).unwrap();
    assert_eq!(reloaded.encode(text).unwrap(), ids);
    assert_eq!(reloaded.decode(&ids).unwrap(), text);
}

#[test]
fn shakespeare_round_trips() {
    let text = std::fs::read_to_string("corpus/tinyshakespeare.txt").unwrap();
    let tokenizer = CharTokenizer::from_text(&text).unwrap();
    assert_eq!(tokenizer.vocab_size(), 65);
    round_trip(&text);
}

#[test]
fn diacritics_crlf_tabs_and_emoji_round_trip() {
    // Vietnamese both precomposed and with combining marks (U+0301, U+0323), CRLF, tabs,
    // runs of spaces, emoji with a zero-width joiner and a skin-tone modifier.
    let text = "Tiếng Việt có dấu: Nguyễn, Trần, Phạm.\r\nTie\u{301}ng Vie\u{323}\u{302}t\r\n\tcột\t\tmột  hai   ba\r\n👩‍💻 👍🏽 🇻🇳\n";
    round_trip(text);
    round_trip(" ");
    round_trip("\n\n\r\n");
}

#[test]
fn an_unknown_character_is_named_with_its_position() {
    let tokenizer = CharTokenizer::from_text("abc\nabc").unwrap();
    let message = tokenizer.encode("ab\ncaé").unwrap_err().to_string();
    assert!(message.contains("'é'"), "{message}");
    assert!(message.contains("U+00E9"), "{message}");
    assert!(message.contains("line 2, column 3"), "{message}");
    assert!(message.contains("character 5"), "{message}");
}

#[test]
fn json_that_is_not_a_character_tokenizer_is_refused() {
    assert!(CharTokenizer::from_json("{").is_err());
    let tokenizer = CharTokenizer::from_text("ab").unwrap();
    let json = tokenizer.to_json().unwrap().replace("\"a\":0", "\"ab\":0");
    let message = CharTokenizer::from_json(&json).err().unwrap().to_string();
    assert!(message.contains("not one character"), "{message}");
}

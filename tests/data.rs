//! Reading text files: UTF-8 across read boundaries, error offsets, the validation split.

use chargru::data::{read_text, validation_text};

#[test]
fn characters_cut_by_a_read_boundary_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    // 'é' is two bytes; put its first byte last in the first 1 MiB block.
    let text = format!("{}é{}👍", "a".repeat((1 << 20) - 1), "b".repeat(1 << 20));
    std::fs::write(&path, &text).unwrap();
    assert_eq!(read_text(&path, "text").unwrap(), text);
}

#[test]
fn invalid_utf8_is_reported_at_its_byte_offset_even_past_the_first_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.txt");
    let mut bytes = "x".repeat((1 << 20) + 5).into_bytes();
    bytes.push(0xFF);
    bytes.extend_from_slice(b"tail");
    std::fs::write(&path, &bytes).unwrap();
    let message = read_text(&path, "text file").unwrap_err().to_string();
    assert!(
        message.contains(&format!("byte offset {}", (1 << 20) + 5)),
        "{message}"
    );
    assert!(message.contains("0xFF"), "{message}");

    let cut = dir.path().join("cut.txt");
    std::fs::write(&cut, &"é".as_bytes()[..1]).unwrap();
    let message = read_text(&cut, "text file").unwrap_err().to_string();
    assert!(
        message.contains("ends inside a character that starts at byte offset 0"),
        "{message}"
    );
}

#[test]
fn the_validation_text_is_the_last_tenth_of_the_characters() {
    assert_eq!(validation_text("0123456789"), "9");
    assert_eq!(validation_text("ééééééééééé"), "éé");
    assert_eq!(validation_text(""), "");
}

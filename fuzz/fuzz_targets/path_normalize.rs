//! Path normalization: `normalize_path` and `read_path` on arbitrary text.
//!
//! Checks: neither panics; `normalize_path`, when Ok, starts with '/', is
//! idempotent, and holds no empty, `.` or `..` segment, no `?`, `#`, `\` or
//! control character; `read_path` agrees with it (one reading exactly when
//! `normalize_path` is Ok, two exactly when it says Ambiguous); both readings
//! of an ambiguous path have the same shape, and the decoded one is itself a
//! normalized path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::request::{PathError, PathReadings, normalize_path, read_path};

fn assert_shape(raw: &str, path: &str, what: &str) {
    assert!(
        path.starts_with('/'),
        "{what} of {raw:?} is {path:?}: no leading '/'"
    );
    assert!(
        !path.contains("//"),
        "{what} of {raw:?} is {path:?}: empty segment"
    );
    assert!(
        !path.contains(['?', '#', '\\']) && !path.chars().any(char::is_control),
        "{what} of {raw:?} is {path:?}: '?', '#', '\\\\' or a control character"
    );
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "{what} of {raw:?} is {path:?}: a dot segment"
    );
}

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let raw = raw.as_ref();
    let strict = normalize_path(raw);
    if let Ok(path) = &strict {
        assert_shape(raw, path, "normalize_path");
        assert_eq!(
            normalize_path(path).as_ref(),
            Ok(path),
            "normalize_path is not idempotent on {raw:?}"
        );
    }
    match (read_path(raw), &strict) {
        (Ok(PathReadings::One(one)), Ok(path)) => assert_eq!(&one, path),
        (Ok(PathReadings::Ambiguous { literal, decoded }), Err(PathError::Ambiguous)) => {
            assert_shape(raw, &literal, "the literal reading");
            assert_shape(raw, &decoded, "the decoded reading");
            assert_eq!(
                normalize_path(&decoded).as_ref(),
                Ok(&decoded),
                "the decoded reading of {raw:?} is not a normalized path"
            );
        }
        // A path that normalize_path calls ambiguous may still be malformed
        // further on, which one of the two readings then finds.
        (Err(_), Err(PathError::Ambiguous)) => {}
        (Err(read), Err(strict)) => assert_eq!(&read, strict, "on {raw:?}"),
        (read, strict) => {
            panic!("read_path {read:?} and normalize_path {strict:?} disagree on {raw:?}")
        }
    }
});

//! How numbers read in what sparkgap prints: sizes in digit groups (`1 048 576`), counts with
//! their noun in the right number (`1 check`, `3 blobs`), never `blob(s)`. Pure.

/// Size with thin-space-free digit groups as STYLE.md shows them: `1 048 576`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `n` and its noun: `1 blob`, `3 blobs` (nouns whose plural is not `+s` are not used).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_and_nouns_counted() {
        assert_eq!(group_digits(1_048_576), "1 048 576");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1 000");
        assert_eq!(count(1u32, "check"), "1 check");
        assert_eq!(count(0u32, "check"), "0 checks");
        assert_eq!(count(3u32, "blob"), "3 blobs");
    }
}

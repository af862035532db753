//! Kubernetes resource quantities (`500m`, `16Gi`, `1.5`), parsed just enough to validate them
//! and to compare/sum them for the resource allocation checks.

/// A parsed quantity as an exact value in milli-units (CPU) or bytes-like units; `None` when
/// the string is not a Kubernetes quantity.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let (num, suffix) = split_number(s)?;
    let (mantissa_milli, frac_digits) = parse_decimal_milli(num)?;
    let _ = frac_digits;
    let scale: (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if !(-18..=18).contains(&exp) {
                return None;
            }
            if exp >= 0 {
                (10i128.pow(exp as u32), 1)
            } else {
                (1, 10i128.pow((-exp) as u32))
            }
        }
        _ => return None,
    };
    mantissa_milli.checked_mul(scale.0).map(|v| v / scale.1)
}

/// True when `s` is a valid Kubernetes quantity.
pub fn is_quantity(s: &str) -> bool {
    parse_milli(s).is_some()
}

fn split_number(s: &str) -> Option<(&str, &str)> {
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    // An exponent suffix like `1e3` starts with 'e' followed by digits.
    let (num, suffix) = s.split_at(end);
    if num.is_empty() || num == "+" || num == "-" {
        return None;
    }
    Some((num, suffix))
}

/// Decimal string → value × 1000 (milli), truncating below a milli.
fn parse_decimal_milli(num: &str) -> Option<(i128, usize)> {
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let int_v: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut frac3 = String::from(frac);
    frac3.truncate(3);
    while frac3.len() < 3 {
        frac3.push('0');
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let frac_v: i128 = frac3.parse().ok()?;
    let v = int_v.checked_mul(1000)?.checked_add(frac_v)?;
    Some((if neg { -v } else { v }, frac.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_milli("500m"), Some(500));
        assert_eq!(parse_milli("8"), Some(8000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("16Gi"), Some(16 * (1i128 << 30) * 1000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("128M"), Some(128_000_000_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Gi", "12 Gi", "1.2.3", "ten", "5X", "--1", "1e99"] {
            assert!(parse_milli(bad).is_none(), "{bad} should be rejected");
        }
    }
}

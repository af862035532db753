//! Timestamps without a clock crate: seconds since 1970 as RFC 3339 (the SBOM's creation time,
//! a generation's time), and a Go `vcs.time` as a pseudo-version's `yyyymmddhhmmss`.

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(epoch: u64) -> String {
    let secs = epoch as i64;
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// An RFC 3339 time (`2024-03-05T06:07:08Z`, `…+02:00`, fractions allowed) in UTC as
/// `20240305060708`; None when it is not one.
pub fn rfc3339_to_compact(t: &str) -> Option<String> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = t.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return None,
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let (h, mi, s) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let off = match offset {
        "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let secs = days_from_civil(y, mo as u32, da as u32) * 86_400 + h * 3600 + mi * 60 + s - off;
    let (y, mo, da) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    Some(format!(
        "{y:04}{mo:02}{da:02}{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_and_offsets() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_to_compact("2024-03-05T06:07:08Z").as_deref(),
            Some("20240305060708")
        );
        assert_eq!(
            rfc3339_to_compact("2024-03-01T01:00:00.5+02:00").as_deref(),
            Some("20240229230000")
        );
        assert_eq!(rfc3339_to_compact("yesterday"), None);
    }
}

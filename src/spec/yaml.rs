//! The spec's YAML: parsing into an `Appliance` with errors in the words of a person who
//! writes Kubernetes YAML (line, column, the field's path, what was expected), and the line of
//! a field for validation messages. Best effort by indentation: used only to enrich messages.

use std::borrow::Cow;

use super::Appliance;

/// Parse YAML into an `Appliance`; the error text carries line and column from serde-saphyr.
pub fn parse(text: &str) -> Result<Appliance, String> {
    parse_named(text, "<input>")
}

/// Parse, with errors that name the file `name` and the position, and for a value of the wrong
/// shape the field it belongs to:
///
/// ```text
/// line 7 column 14: spec.verify.timeout: expected one value here (text or a number), not a list or a mapping
///  --> appliance.yaml:7:14
///   |
/// 7 |     timeout: [2m]
///   |              ^ expected one value here (text or a number), not a list or a mapping
/// ```
pub fn parse_named(text: &str, name: &str) -> Result<Appliance, String> {
    from_yaml(text, name)
}

/// Any YAML document the user writes (the spec, a credentials file), parsed with the errors of
/// [`parse_named`].
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str, name: &str) -> Result<T, String> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let rendered = e.render_with_options(serde_saphyr::render_options! {
            formatter: &SpecWords,
            source_name: Some(name),
        });
        let (first, snippet) = rendered.split_once('\n').unwrap_or((&rendered, ""));
        // The first line reads "error: line L column C: message"; the caller says "error:".
        let first = first.strip_prefix("error: ").unwrap_or(first);
        let Some(at) = e.location() else {
            return rendered;
        };
        let (line, column) = (at.line() as usize, at.column() as usize);
        let message = first
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("line "))
            .map_or(first, |(_, m)| m);
        // Well-formed YAML of the wrong shape: name the field. (A syntax error has no field to
        // name; the YAML itself does not parse then.)
        let field = serde_saphyr::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|_| field_at(text, line, column));
        let mut out = format!("line {line} column {column}: ");
        if let Some(field) = field {
            out.push_str(&field);
            out.push_str(": ");
        }
        out.push_str(message);
        if !snippet.is_empty() {
            out.push('\n');
            out.push_str(snippet);
        }
        out
    })
}

/// serde-saphyr's messages in the words of someone writing Kubernetes YAML: what the field
/// takes, never the parser's types ("invalid u32") or its options ("set DuplicateKeyPolicy").
struct SpecWords;

impl serde_saphyr::MessageFormatter for SpecWords {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> Cow<'a, str> {
        use serde_saphyr::Error as E;
        match err {
            E::Unexpected { expected, .. } => Cow::Owned(match *expected {
                "sequence start" => "expected a list here (`- item` lines or `[a, b]`)".into(),
                "mapping start" | "empty mapping start" => {
                    "expected a mapping here (`key: value` lines or `{key: value}`)".into()
                }
                "string scalar" => {
                    "expected one value here (text or a number), not a list or a mapping".into()
                }
                other => format!("expected {other} here"),
            }),
            E::InvalidScalar { ty, .. } => Cow::Owned(scalar_words(ty)),
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => Cow::Owned(format!(
                "{variant:?} is not one of the values this field takes: {}",
                expected.join(", ")
            )),
            E::SerdeUnknownField {
                field, expected, ..
            } => Cow::Owned(format!(
                "unknown field {field:?} (a typo?); the fields here are {}",
                expected.join(", ")
            )),
            E::SerdeMissingField { field, .. } => {
                Cow::Owned(format!("the required field {field:?} is missing"))
            }
            E::DuplicateMappingKey { key, .. } => Cow::Owned(match key {
                Some(k) => format!("{k:?} appears twice in this mapping; keep one"),
                None => "a key appears twice in this mapping; keep one".into(),
            }),
            E::Eof { .. } => Cow::Borrowed("the file ends where more YAML was expected"),
            _ => serde_saphyr::UserMessageFormatter.format_message(err),
        }
    }
}

/// What a scalar of the Rust type `ty` takes, in a YAML writer's words.
fn scalar_words(ty: &str) -> String {
    let range = match ty {
        "u8" => Some(u64::from(u8::MAX)),
        "u16" => Some(u64::from(u16::MAX)),
        "u32" => Some(u64::from(u32::MAX)),
        "u64" | "usize" => Some(u64::MAX),
        _ => None,
    };
    match (range, ty) {
        (Some(max), _) => format!("expected a whole number from 0 to {max}"),
        (None, "bool") => "expected true or false".into(),
        (None, "f32" | "f64") => "expected a number".into(),
        (None, t) if t.starts_with('i') => "expected a whole number".into(),
        (None, t) => format!("expected a value of type {t}"),
    }
}

/// Best-effort dotted path (`spec.quotas[2].namespace`) of the YAML node at `line`:`column`
/// (1-based), from block-style indentation; flow mappings on the line add their last key
/// before the column. None when unsure.
pub fn field_at(text: &str, line: usize, column: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let cur = *lines.get(line.checked_sub(1)?)?;
    let mut path: Vec<String> = Vec::new();
    let shape = LineShape::of(cur);
    // Flow keys on the error's line before the column: `k3s: {version: x, binaryUrl: [y]}`.
    let before = cur.get(..column.saturating_sub(1).min(cur.len()))?;
    let mut limit = match shape.key {
        Some((col, key)) if col < column.saturating_sub(1) => {
            let rest = before.get(col + key.len() + 1..).unwrap_or_default();
            if let Some(flow) = last_flow_key(rest) {
                path.push(flow);
            }
            path.push(key.to_string());
            col
        }
        _ => shape.indent,
    };
    if let Some(dash) = shape.dashes.iter().rev().find(|d| **d < limit) {
        path.push(format!("[{}]", item_index(&lines, line - 1, *dash)));
        limit = *dash;
    }
    for i in (0..line - 1).rev() {
        let l = LineShape::of(lines[i]);
        if l.blank || l.indent >= limit {
            continue;
        }
        if let Some((col, key)) = l.key
            && col < limit
        {
            path.push(key.to_string());
            limit = col;
        }
        if let Some(dash) = l.dashes.iter().rev().find(|d| **d < limit) {
            path.push(format!("[{}]", item_index(&lines, i, *dash)));
            limit = *dash;
        }
        if limit == 0 {
            break;
        }
    }
    if path.is_empty() {
        return None;
    }
    let mut out = String::new();
    for part in path.iter().rev() {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    Some(out)
}

/// A YAML line's block structure: its indentation, the columns of its `- ` item markers, and
/// the key it opens (column, name).
struct LineShape<'a> {
    blank: bool,
    indent: usize,
    dashes: Vec<usize>,
    key: Option<(usize, &'a str)>,
}

impl<'a> LineShape<'a> {
    fn of(line: &'a str) -> LineShape<'a> {
        let trimmed = line.trim_start();
        let blank = trimmed.is_empty() || trimmed.starts_with('#');
        let indent = line.len() - trimmed.len();
        let mut dashes = Vec::new();
        let mut col = indent;
        let mut rest = trimmed;
        while let Some(r) = rest
            .strip_prefix("- ")
            .or_else(|| (rest == "-").then_some(""))
        {
            dashes.push(col);
            let r2 = r.trim_start();
            col += rest.len() - r2.len();
            rest = r2;
        }
        let key = rest
            .split_once(':')
            .filter(|(k, v)| is_plain_key(k) && (v.is_empty() || v.starts_with(' ')))
            .map(|(k, _)| (col, k));
        LineShape {
            blank,
            indent,
            dashes,
            key,
        }
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// The last `key:` of a flow mapping in `s` (the text before the error's column), if any.
fn last_flow_key(s: &str) -> Option<String> {
    if !s.contains('{') {
        return None;
    }
    s.rsplit(['{', ',']).find_map(|part| {
        part.trim()
            .split_once(':')
            .filter(|(k, _)| is_plain_key(k.trim()))
            .map(|(k, _)| k.trim().to_string())
    })
}

/// Which item of its sequence the `- ` at `dash` on line `at` (0-based) opens: the items
/// before it at the same column, up to the line that holds the sequence.
fn item_index(lines: &[&str], at: usize, dash: usize) -> usize {
    let mut n = 0;
    for l in lines[..at].iter().rev() {
        let s = LineShape::of(l);
        if s.blank {
            continue;
        }
        if s.dashes.first() == Some(&dash) {
            n += 1;
        } else if s.indent < dash || (s.indent == dash && s.dashes.is_empty()) {
            break;
        }
    }
    n
}

/// The line of `field`, else of the nearest enclosing field that can be found: a field inside a
/// flow mapping (`{ a: 1 }`) or a key holding dots (`memory.available`) is found by its parent.
pub fn locate_nearest(text: &str, field: &str) -> Option<usize> {
    let mut f = field;
    loop {
        if let Some(line) = locate_field(text, f) {
            return Some(line);
        }
        f = &f[..f.rfind(['.', '['])?];
    }
}

/// Best-effort line of a dotted spec path such as `spec.quotas[2].namespace`: walks the YAML
/// text by indentation. Used only to enrich messages; None when unsure.
pub fn locate_field(text: &str, field: &str) -> Option<usize> {
    let mut segments: Vec<(String, Option<usize>)> = Vec::new();
    for part in field.split('.') {
        let (key, idx) = match part.find('[') {
            Some(b) => {
                let idx = part[b + 1..].trim_end_matches(']').parse().ok();
                (part[..b].to_string(), idx)
            }
            None => (part.to_string(), None),
        };
        segments.push((key, idx));
    }
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut from, mut to, mut min_indent) = (0usize, lines.len(), 0usize);
    let mut found = None;
    for (key, idx) in segments {
        let pos = (from..to).find(|&i| {
            let l = lines[i];
            let t = l.trim_start().trim_start_matches("- ");
            indent(l) >= min_indent && (t.starts_with(&format!("{key}:")))
        })?;
        found = Some(pos + 1);
        let key_indent = indent(lines[pos]);
        // The block of this key ends at the next line with indentation <= key's.
        let end = (pos + 1..to)
            .find(|&i| {
                let l = lines[i];
                !l.trim().is_empty() && !l.trim_start().starts_with('#') && indent(l) <= key_indent
            })
            .unwrap_or(to);
        from = pos + 1;
        to = end;
        min_indent = key_indent + 1;
        if let Some(n) = idx {
            // Find the n-th list item ("- ") directly under the key.
            let items: Vec<usize> = (from..to)
                .filter(|&i| lines[i].trim_start().starts_with("- ") || lines[i].trim() == "-")
                .collect();
            let item_indent = items.first().map(|&i| indent(lines[i]))?;
            let items: Vec<usize> = items
                .into_iter()
                .filter(|&i| indent(lines[i]) == item_indent)
                .collect();
            let start = *items.get(n)?;
            let stop = items.get(n + 1).copied().unwrap_or(to);
            found = Some(start + 1);
            from = start;
            to = stop;
            min_indent = item_indent;
        }
    }
    found
}

#[cfg(test)]
mod field_at_tests {
    use super::field_at;

    const TEXT: &str = "apiVersion: v1\nspec:\n  k3s: {version: v1, binaryUrl: [x]}\n  namespaces:\n    - name: a\n    - name: b\n      labels: {x: [1]}\n  verify:\n    timeout: [2m]\n";

    #[test]
    fn names_block_keys_items_and_flow_keys() {
        assert_eq!(
            field_at(TEXT, 9, 14).as_deref(),
            Some("spec.verify.timeout")
        );
        assert_eq!(
            field_at(TEXT, 6, 13).as_deref(),
            Some("spec.namespaces[1].name")
        );
        assert_eq!(
            field_at(TEXT, 7, 20).as_deref(),
            Some("spec.namespaces[1].labels.x")
        );
        assert_eq!(field_at(TEXT, 3, 35).as_deref(), Some("spec.k3s.binaryUrl"));
        assert_eq!(field_at(TEXT, 1, 13).as_deref(), Some("apiVersion"));
    }
}

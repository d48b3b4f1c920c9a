//! Host lists with ranges, as minimega writes them: `host[1-5,7]`, `kn[008-011]`, `a,b[1-2]`.
//!
//! [`split_list`] expands a list into names (numbers sorted and de-duplicated within each
//! bracket; zero padding kept when every item of a bracket has the same width);
//! [`unsplit_list`] compresses names back into the shortest such list.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{0:?}: brackets can't be nested")]
    Nested(String),
    #[error("{0:?}: a ']' without its '['")]
    Unmatched(String),
    #[error("{0:?}: a '[' is never closed")]
    Unterminated(String),
    #[error("{0:?}: the range must end the name, e.g. host[1-3]")]
    Suffix(String),
    #[error("{0:?}: {1:?} is not a number or a range like 3-7")]
    Item(String, String),
    #[error("{0:?}: the range {1}-{2} runs backwards")]
    Backwards(String, u64, u64),
    #[error("{0:?}: the range holds more than {MAX_EXPANSION} names")]
    TooLarge(String),
}

/// A bound on one bracket's expansion, so that a typo like `h[1-99999999]` is an error, not
/// a hundred million strings.
const MAX_EXPANSION: u64 = 1_000_000;

/// Expands `a,b[1-3],kn[008-010]` into `a, b1, b2, b3, kn008, kn009, kn010`.
pub fn split_list(list: &str) -> Result<Vec<String>, RangeError> {
    let mut names = Vec::new();
    for token in split_outside_brackets(list)? {
        let token = token.trim();
        if token.is_empty() {
            continue;
        }
        match token.find('[') {
            None => names.push(token.to_owned()),
            Some(open) => {
                if !token.ends_with(']') {
                    return Err(RangeError::Suffix(token.to_owned()));
                }
                let prefix = &token[..open];
                let inner = &token[open + 1..token.len() - 1];
                expand(token, prefix, inner, &mut names)?;
            }
        }
    }
    Ok(names)
}

fn split_outside_brackets(list: &str) -> Result<Vec<&str>, RangeError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth > 0 => return Err(RangeError::Nested(list.to_owned())),
            '[' => depth = 1,
            ']' if depth == 0 => return Err(RangeError::Unmatched(list.to_owned())),
            ']' => depth = 0,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(RangeError::Unterminated(list.to_owned()));
    }
    parts.push(&list[start..]);
    Ok(parts)
}

fn expand(
    token: &str,
    prefix: &str,
    inner: &str,
    names: &mut Vec<String>,
) -> Result<(), RangeError> {
    let number = |s: &str| -> Result<u64, RangeError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError::Item(token.to_owned(), s.to_owned()));
        }
        s.parse()
            .map_err(|_| RangeError::Item(token.to_owned(), s.to_owned()))
    };
    let mut widths = Vec::new();
    let mut values = Vec::new();
    for item in inner.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (item, item),
        };
        let (a, b) = (number(lo)?, number(hi)?);
        if a > b {
            return Err(RangeError::Backwards(token.to_owned(), a, b));
        }
        if b - a >= MAX_EXPANSION || values.len() as u64 + (b - a) >= MAX_EXPANSION {
            return Err(RangeError::TooLarge(token.to_owned()));
        }
        widths.extend([lo.len(), hi.len()]);
        values.extend(a..=b);
    }
    values.sort_unstable();
    values.dedup();
    // Padding is kept when every item was written at the same width.
    let width = if widths.windows(2).all(|w| w[0] == w[1]) {
        widths[0]
    } else {
        0
    };
    names.extend(values.into_iter().map(|v| format!("{prefix}{v:0width$}")));
    Ok(())
}

/// Compresses names into a list: `kn1, kn2, kn3, kn5, x` → `kn[1-3,5],x`. Names are grouped by
/// prefix (everything before the trailing digits) and by padding; each group's numbers become
/// runs.
pub fn unsplit_list<S: AsRef<str>>(names: &[S]) -> String {
    // (prefix, padded width or 0) -> numbers; names without trailing digits stand alone.
    let mut groups: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    let mut plain: Vec<String> = Vec::new();
    let parsed: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            let n = n.as_ref();
            let digits = n.len() - n.bytes().rev().take_while(u8::is_ascii_digit).count();
            (n[..digits].to_owned(), n[digits..].to_owned())
        })
        .collect();
    // Widths written with a leading zero, per prefix: names of that width share the padding.
    let padded: std::collections::HashSet<(String, usize)> = parsed
        .iter()
        .filter(|(_, d)| d.len() > 1 && d.starts_with('0'))
        .map(|(p, d)| (p.clone(), d.len()))
        .collect();
    for (prefix, digits) in parsed {
        match digits.parse::<u64>() {
            Ok(v) if digits.len() <= 19 => {
                let width = if padded.contains(&(prefix.clone(), digits.len())) {
                    digits.len()
                } else {
                    0
                };
                groups.entry((prefix, width)).or_default().push(v);
            }
            _ => plain.push(format!("{prefix}{digits}")),
        }
    }
    plain.sort();
    plain.dedup();
    let mut out = plain;
    for ((prefix, width), mut values) in groups {
        values.sort_unstable();
        values.dedup();
        if values.len() == 1 {
            out.push(format!("{prefix}{:0width$}", values[0]));
            continue;
        }
        let runs: Vec<String> = topology::ids::runs(&values)
            .into_iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{a:0width$}")
                } else {
                    format!("{a:0width$}-{b:0width$}")
                }
            })
            .collect();
        out.push(format!("{prefix}[{}]", runs.join(",")));
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_list(s).unwrap()
    }

    #[test]
    fn expands_ranges_lists_and_plain_names() {
        assert_eq!(split("host[1-3,7]"), ["host1", "host2", "host3", "host7"]);
        assert_eq!(split("a,b[1-2],c"), ["a", "b1", "b2", "c"]);
        assert_eq!(
            split("mm[3,1,2,2]"),
            ["mm1", "mm2", "mm3"],
            "sorted, no repeats"
        );
        assert_eq!(split(""), Vec::<String>::new());
    }

    #[test]
    fn keeps_zero_padding_when_every_item_has_the_same_width() {
        assert_eq!(
            split("kn[008-011,100]"),
            ["kn008", "kn009", "kn010", "kn011", "kn100"]
        );
        // Mixed widths drop the padding.
        assert_eq!(split("kn[08-10,7]"), ["kn7", "kn8", "kn9", "kn10"]);
    }

    #[test]
    fn refuses_malformed_lists() {
        assert!(matches!(split_list("a[1-[2]]"), Err(RangeError::Nested(_))));
        assert!(matches!(split_list("a1-2]"), Err(RangeError::Unmatched(_))));
        assert!(matches!(
            split_list("a[1-2"),
            Err(RangeError::Unterminated(_))
        ));
        assert!(matches!(
            split_list("foo[1-3].bar"),
            Err(RangeError::Suffix(_))
        ));
        assert!(matches!(split_list("a[x]"), Err(RangeError::Item(..))));
        assert!(matches!(
            split_list("a[5-2]"),
            Err(RangeError::Backwards(..))
        ));
        assert!(matches!(
            split_list("a[1-99999999]"),
            Err(RangeError::TooLarge(_))
        ));
    }

    #[test]
    fn compresses_names_into_ranges() {
        let names = ["kn1", "kn2", "kn3", "kn4", "kn5", "kn20", "kn44", "kn45"];
        assert_eq!(unsplit_list(&names), "kn[1-5,20,44-45]");
        assert_eq!(unsplit_list(&["mm1", "mm3"]), "mm[1,3]");
        assert_eq!(unsplit_list(&["solo", "h7"]), "solo,h7");
        assert_eq!(
            unsplit_list(&["kn008", "kn009", "kn010", "kn011", "kn100"]),
            "kn[008-011,100]"
        );
    }

    #[test]
    fn splitting_what_was_compressed_gives_the_names_back() {
        let cases: [&[&str]; 4] = [
            &["h1", "h2", "h3", "h10", "h11", "x", "node007", "node008"],
            &["a", "b", "c"],
            &["kn008", "kn009", "kn010", "kn011", "kn100"],
            &["r1", "r3", "r5", "s2"],
        ];
        for names in cases {
            let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            let mut got = split(&unsplit_list(names));
            want.sort();
            got.sort();
            assert_eq!(got, want, "{}", unsplit_list(names));
        }
    }
}

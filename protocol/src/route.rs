//! Route patterns as the server routes them (actix syntax: one `{name}` segment stands for a
//! path parameter), and the paths clients build from them: each path is defined once, as its
//! pattern, in [`crate::api`] and [`crate::ds`].

/// `pattern` (a route pattern with one `{name}` segment, as the server routes it) with that
/// segment replaced by `value`: a path.
pub fn fill_route(pattern: &str, value: impl std::fmt::Display) -> String {
    let start = pattern.find('{').expect("a route pattern has a parameter");
    let end = start + pattern[start..].find('}').expect("a parameter ends");
    format!("{}{value}{}", &pattern[..start], &pattern[end + 1..])
}

/// Whether `path` is one the server's route `pattern` (actix syntax: `{name}` matches one
/// segment) matches.
pub fn matches(pattern: &str, path: &str) -> bool {
    let (patterns, segments): (Vec<_>, Vec<_>) =
        (pattern.split('/').collect(), path.split('/').collect());
    patterns.len() == segments.len()
        && patterns.iter().zip(&segments).all(|(p, s)| {
            if p.starts_with('{') && p.ends_with('}') {
                !s.is_empty()
            } else {
                p == s
            }
        })
}

//! `strategy.matrix` expansion: the cross product of the vectors, minus `exclude`, plus
//! `include`, exactly as GitHub's MatrixBuilder orders and names the resulting jobs.
//!
//! The caller hands over already-evaluated values: a matrix that still contains an
//! expression is deferred until the job's `needs` have finished, and is not expanded here.

use crate::value::{eq_ignore_case, Object, Value};
use indexmap::IndexMap;

/// GitHub refuses a matrix that would create more jobs than this.
pub const MAX_LEGS: usize = 256;

/// The cross product is walked before `exclude` can shrink it, so an absurd product (say 30
/// vectors of 10 values) would hang the expander long before the leg limit could be checked.
/// No real matrix needs a million combinations to end up with at most 256 jobs.
pub const MAX_CROSS_PRODUCT: usize = 1 << 20;

/// Every combination is compared with every exclude and include leaf. Capping the product
/// bounds the time a hostile matrix can take (a million combinations against thousands of
/// excludes would otherwise run for minutes); real matrices stay far below it.
pub const MAX_COMPARISONS: usize = 1 << 26;

/// Nested matrix values are compared leaf by leaf; recursion stops here so hostile input
/// cannot overflow the stack.
const MAX_VALUE_DEPTH: usize = 64;

/// GitHub truncates job display names to this many UTF-16 code units.
const MAX_DISPLAY_NAME: usize = 100;

/// One job created by the matrix.
#[derive(Debug, Clone)]
pub struct MatrixLeg {
    /// The `matrix` context of this job, keys in creation order.
    pub context: Object,
    /// The values shown in the job's display name, `build (v1, v2)`.
    pub display_segments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("Matrix vector '{0}' does not contain any values")]
    EmptyVector(String),
    #[error("Matrix vector '{0}' must be a sequence of values")]
    NotASequence(String),
    #[error("Matrix must define at least one vector")]
    NoVectors,
    #[error("strategy.matrix must be a mapping of vectors, but it evaluated to a {0}")]
    NotAMapping(&'static str),
    #[error("Matrix '{0}' must be a sequence of mappings")]
    NotAListOfMappings(&'static str),
    #[error("Matrix {0} entry must be a mapping")]
    EntryNotAMapping(&'static str),
    #[error("Matrix {0} entry must not be empty: give at least one key")]
    EmptyEntry(&'static str),
    #[error("Matrix exclude key '{0}' does not match any key within the matrix")]
    UnknownExcludeKey(String),
    #[error("Matrix produces {0} jobs; GitHub allows at most {MAX_LEGS}: add exclusions or split the job")]
    TooManyLegs(usize),
    #[error("Matrix cross product has {0} combinations before exclusions; kiln expands at most {MAX_CROSS_PRODUCT}: reduce the vectors")]
    CrossProductTooLarge(usize),
    #[error("Matrix needs {0} include/exclude comparisons; kiln allows at most {MAX_COMPARISONS}: use fewer vectors or entries")]
    TooManyComparisons(usize),
    #[error("Matrix value nested more than {MAX_VALUE_DEPTH} levels deep")]
    TooDeep,
}

/// Expands a `strategy.matrix` mapping into its jobs, in the order GitHub creates them.
pub fn expand(matrix: &Object) -> Result<Vec<MatrixLeg>, MatrixError> {
    let mut vectors: Vec<(&str, &[Value])> = Vec::new();
    let mut includes: &[Value] = &[];
    let mut excludes: &[Value] = &[];
    for (key, value) in matrix.iter() {
        match key.as_str() {
            "include" => includes = entry_list(value, "include")?,
            "exclude" => excludes = entry_list(value, "exclude")?,
            _ => {
                let Value::Array(items) = value else {
                    return Err(MatrixError::NotASequence(key.clone()));
                };
                if items.is_empty() {
                    return Err(MatrixError::EmptyVector(key.clone()));
                }
                vectors.push((key.as_str(), items.as_slice()));
            }
        }
    }
    if vectors.is_empty() && includes.is_empty() {
        return Err(MatrixError::NoVectors);
    }

    let excludes = excludes
        .iter()
        .map(|entry| {
            let entry = entry_object(entry, "exclude")?;
            let mut leaves = Vec::new();
            for (key, value) in entry.iter() {
                let vector = vector_index(&vectors, key)
                    .ok_or_else(|| MatrixError::UnknownExcludeKey(key.clone()))?;
                collect_leaves(vector, value, &mut Vec::new(), &mut leaves)?;
            }
            Ok(leaves)
        })
        .collect::<Result<Vec<_>, MatrixError>>()?;
    let includes = includes
        .iter()
        .map(|entry| IncludeEntry::split(entry_object(entry, "include")?, &vectors))
        .collect::<Result<Vec<_>, _>>()?;

    let most_extras = includes
        .iter()
        .map(|entry| entry.extras.len())
        .sum::<usize>();
    let mut legs = Vec::new();
    let mut included = vec![false; includes.len()];
    let total = cross_product_size(&vectors)?;
    let leaves_per_combination = excludes.iter().map(Vec::len).sum::<usize>()
        + includes
            .iter()
            .map(|entry| entry.filter.len())
            .sum::<usize>();
    let comparisons = total.saturating_mul(leaves_per_combination);
    if comparisons > MAX_COMPARISONS {
        return Err(MatrixError::TooManyComparisons(comparisons));
    }
    let mut picks = vec![0usize; vectors.len()];
    for product_index in 0..total {
        set_picks(&vectors, product_index, &mut picks);
        if excludes
            .iter()
            .any(|pattern| matches(pattern, &vectors, &picks))
        {
            continue;
        }
        if legs.len() == MAX_LEGS {
            return Err(MatrixError::TooManyLegs(count_legs(
                &vectors, &excludes, &includes,
            )));
        }
        let mut context = Object {
            entries: IndexMap::with_capacity(vectors.len() + most_extras),
            case_sensitive: false,
        };
        for ((name, items), pick) in vectors.iter().zip(&picks) {
            context.insert(*name, items[*pick].clone());
        }
        // Segments come from the vector values only, before include extras are merged.
        let display_segments = display_segments(&context)?;
        for (entry, matched) in includes.iter().zip(included.iter_mut()) {
            if matches(&entry.filter, &vectors, &picks) {
                *matched = true;
                for (key, value) in &entry.extras {
                    insert_ignore_case(&mut context, key, value.clone());
                }
            }
        }
        legs.push(MatrixLeg {
            context,
            display_segments,
        });
    }
    // Includes that matched nothing become jobs of their own, exactly as written.
    for (entry, matched) in includes.iter().zip(included) {
        if matched {
            continue;
        }
        if legs.len() == MAX_LEGS {
            return Err(MatrixError::TooManyLegs(count_legs(
                &vectors, &excludes, &includes,
            )));
        }
        let context = entry.original.clone();
        let display_segments = display_segments(&context)?;
        legs.push(MatrixLeg {
            context,
            display_segments,
        });
    }
    Ok(legs)
}

/// GitHub's job display name: `name (v1, v2)`, or the bare name without segments, cut to
/// 100 UTF-16 code units with a trailing `...`.
pub fn display_name(job_name: &str, segments: &[String]) -> String {
    // GitHub gives a job without a name no display name at all, segments or not.
    if job_name.is_empty() {
        return String::new();
    }
    let name = if segments.iter().all(|s| s.is_empty()) {
        job_name.to_string()
    } else {
        let shown: Vec<&str> = segments
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        format!("{job_name} ({})", shown.join(", "))
    };
    if name.encode_utf16().count() <= MAX_DISPLAY_NAME {
        return name;
    }
    let mut kept = String::new();
    let mut units = 0;
    for c in name.chars() {
        // Never split a surrogate pair: a character that does not fit whole is left out.
        if units + c.len_utf16() > MAX_DISPLAY_NAME - 3 {
            break;
        }
        units += c.len_utf16();
        kept.push(c);
    }
    kept.push_str("...");
    kept
}

/// The vectors in key order: name and values.
type Vectors<'a> = [(&'a str, &'a [Value])];

/// One leaf of an exclude entry or include filter: `matrix[vector][path...] == literal`.
struct Leaf {
    vector: usize,
    path: Vec<Value>,
    literal: Value,
}

/// An `include` entry split into the leaves that select combinations (under original
/// vector names) and the keys it adds to them.
struct IncludeEntry {
    original: Object,
    filter: Vec<Leaf>,
    extras: Vec<(String, Value)>,
}

impl IncludeEntry {
    fn split(entry: &Object, vectors: &Vectors<'_>) -> Result<Self, MatrixError> {
        let mut filter = Vec::new();
        let mut extras = Vec::new();
        for (key, value) in entry.iter() {
            match vector_index(vectors, key) {
                Some(vector) => collect_leaves(vector, value, &mut Vec::new(), &mut filter)?,
                None => extras.push((key.clone(), value.clone())),
            }
        }
        Ok(IncludeEntry {
            original: entry.clone(),
            filter,
            extras,
        })
    }
}

/// Include and exclude keys name vectors ignoring case.
fn vector_index(vectors: &Vectors<'_>, key: &str) -> Option<usize> {
    vectors
        .iter()
        .position(|(name, _)| eq_ignore_case(name, key))
}

fn entry_list<'a>(value: &'a Value, section: &'static str) -> Result<&'a [Value], MatrixError> {
    match value {
        Value::Array(items) => Ok(items.as_slice()),
        _ => Err(MatrixError::NotAListOfMappings(section)),
    }
}

fn entry_object<'a>(entry: &'a Value, section: &'static str) -> Result<&'a Object, MatrixError> {
    let Value::Object(object) = entry else {
        return Err(MatrixError::EntryNotAMapping(section));
    };
    if object.is_empty() {
        return Err(MatrixError::EmptyEntry(section));
    }
    Ok(object)
}

/// The number of cross-product combinations; none without vectors (an include-only matrix).
fn cross_product_size(vectors: &Vectors<'_>) -> Result<usize, MatrixError> {
    if vectors.is_empty() {
        return Ok(0);
    }
    let total = vectors.iter().fold(1usize, |total, (_, items)| {
        total.saturating_mul(items.len())
    });
    if total > MAX_CROSS_PRODUCT {
        return Err(MatrixError::CrossProductTooLarge(total));
    }
    Ok(total)
}

/// Which value of each vector the combination at `product_index` takes: the first vector
/// varies slowest, so each vector's block size is the product of the lengths after it.
fn set_picks(vectors: &Vectors<'_>, product_index: usize, picks: &mut [usize]) {
    let mut block = 1usize;
    for (slot, (_, items)) in picks.iter_mut().zip(vectors).rev() {
        *slot = (product_index / block) % items.len();
        block = block.saturating_mul(items.len());
    }
}

/// Flattens a pattern value into leaves: every primitive with the keys or indexes that lead
/// to it. An empty nested mapping or sequence has no leaves, so it matches anything.
fn collect_leaves(
    vector: usize,
    value: &Value,
    path: &mut Vec<Value>,
    out: &mut Vec<Leaf>,
) -> Result<(), MatrixError> {
    if path.len() >= MAX_VALUE_DEPTH {
        return Err(MatrixError::TooDeep);
    }
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter() {
                path.push(Value::string(key.as_str()));
                collect_leaves(vector, child, path, out)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(Value::Number(index as f64));
                collect_leaves(vector, child, path, out)?;
                path.pop();
            }
        }
        leaf => out.push(Leaf {
            vector,
            path: path.clone(),
            literal: leaf.clone(),
        }),
    }
    Ok(())
}

/// `matrix[path] == literal` for every leaf, with expression indexing (a missing key is
/// null) and loose equality, so `'A'` matches `'a'` and `null` matches `''`.
fn matches(pattern: &[Leaf], vectors: &Vectors<'_>, picks: &[usize]) -> bool {
    pattern.iter().all(|leaf| {
        let value = &vectors[leaf.vector].1[picks[leaf.vector]];
        match leaf.path.split_first() {
            None => value.loose_eq(&leaf.literal),
            Some((first, rest)) => rest
                .iter()
                .fold(value.index(first), |current, key| current.index(key))
                .loose_eq(&leaf.literal),
        }
    })
}

fn display_segments(combination: &Object) -> Result<Vec<String>, MatrixError> {
    let mut segments = Vec::new();
    for (_, value) in combination.iter() {
        push_segments(value, 1, &mut segments)?;
    }
    Ok(segments)
}

/// Primitive leaves in order, depth first. Walked without building paths: this runs once
/// per job, while patterns are flattened once per matrix.
fn push_segments(
    value: &Value,
    depth: usize,
    segments: &mut Vec<String>,
) -> Result<(), MatrixError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(MatrixError::TooDeep);
    }
    match value {
        Value::Object(object) => {
            for (_, child) in object.iter() {
                push_segments(child, depth + 1, segments)?;
            }
        }
        Value::Array(items) => {
            for child in items.iter() {
                push_segments(child, depth + 1, segments)?;
            }
        }
        leaf => {
            // GitHub's JobNameBuilder skips empty segments, so null and '' never show.
            let text = leaf.to_display_string();
            if !text.is_empty() {
                segments.push(text);
            }
        }
    }
    Ok(())
}

/// Include extras overwrite earlier extras whatever their case, keeping the first spelling.
fn insert_ignore_case(object: &mut Object, key: &str, value: Value) {
    let existing = match object.entries.get_index_of(key) {
        Some(index) => Some(index),
        None => object.entries.keys().position(|k| eq_ignore_case(k, key)),
    };
    match existing {
        Some(index) => object.entries[index] = value,
        None => object.insert(key, value),
    }
}

/// The full job count for the over-limit error, computed without building the legs.
fn count_legs(vectors: &Vectors<'_>, excludes: &[Vec<Leaf>], includes: &[IncludeEntry]) -> usize {
    let total = cross_product_size(vectors).unwrap_or(0);
    let mut picks = vec![0usize; vectors.len()];
    let mut matched = vec![false; includes.len()];
    let mut count = 0;
    for product_index in 0..total {
        set_picks(vectors, product_index, &mut picks);
        if excludes
            .iter()
            .any(|pattern| matches(pattern, vectors, &picks))
        {
            continue;
        }
        count += 1;
        for (entry, hit) in includes.iter().zip(matched.iter_mut()) {
            *hit = *hit || matches(&entry.filter, vectors, &picks);
        }
    }
    count + matched.iter().filter(|hit| !**hit).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Value {
        Value::array(items.iter().map(|s| Value::string(*s)).collect())
    }

    fn object(pairs: Vec<(&str, Value)>) -> Object {
        let mut object = Object::new();
        for (key, value) in pairs {
            object.insert(key, value);
        }
        object
    }

    #[test]
    fn display_name_joins_segments_and_truncates_to_100() {
        assert_eq!(display_name("build", &[]), "build");
        assert_eq!(display_name("", &["x".to_string()]), "");
        let segments = vec!["linux".to_string(), "1.5".to_string()];
        assert_eq!(display_name("build", &segments), "build (linux, 1.5)");
        let long = vec!["x".repeat(200)];
        let name = display_name("build", &long);
        assert_eq!(name.len(), 100);
        assert!(name.starts_with("build (xxx") && name.ends_with("xx..."));
        // A character outside the BMP counts as two units and is never cut in half.
        let wide = vec!["😀".repeat(60)];
        let name = display_name("b", &wide);
        assert!(name.ends_with("..."));
        assert!(name.encode_utf16().count() <= 100);
    }

    #[test]
    fn more_than_256_legs_is_an_error_naming_the_count() {
        let digits: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        let digits: Vec<&str> = digits.iter().map(String::as_str).collect();
        let matrix = object(vec![("a", strings(&digits)), ("b", strings(&digits))]);
        assert_eq!(
            expand(&matrix).map(|l| l.len()),
            Err(MatrixError::TooManyLegs(289))
        );

        let matrix = object(vec![
            ("a", strings(&digits[..16])),
            ("b", strings(&digits[..16])),
        ]);
        assert_eq!(expand(&matrix).map(|l| l.len()), Ok(256));

        // Appended includes count too.
        let extra = Value::array(vec![Value::object(object(vec![(
            "a",
            Value::string("new"),
        )]))]);
        let matrix = object(vec![
            ("a", strings(&digits[..16])),
            ("b", strings(&digits[..16])),
            ("include", extra),
        ]);
        assert_eq!(
            expand(&matrix).map(|l| l.len()),
            Err(MatrixError::TooManyLegs(257))
        );
    }

    #[test]
    fn huge_cross_products_are_refused_before_iterating() {
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
        let names: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
        let matrix = object(names.iter().map(|n| (n.as_str(), strings(&ten))).collect());
        assert_eq!(
            expand(&matrix).map(|l| l.len()),
            Err(MatrixError::CrossProductTooLarge(usize::MAX))
        );
    }

    #[test]
    fn too_many_comparisons_are_refused_before_iterating() {
        let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let exclude = |v: &str| Value::object(object(vec![("a", Value::string(v))]));
        let matrix = object(vec![
            ("a", strings(&values)),
            ("b", strings(&values)),
            (
                "exclude",
                Value::array(values.iter().map(|v| exclude(v)).collect()),
            ),
        ]);
        assert_eq!(
            expand(&matrix).map(|l| l.len()),
            Err(MatrixError::TooManyComparisons(1_000_000_000))
        );
    }

    #[test]
    fn malformed_matrices_are_errors() {
        let scalar = object(vec![("os", Value::string("linux"))]);
        assert_eq!(
            expand(&scalar).err(),
            Some(MatrixError::NotASequence("os".into()))
        );

        let empty_include = object(vec![
            ("os", strings(&["linux"])),
            ("include", Value::array(vec![Value::object(Object::new())])),
        ]);
        assert_eq!(
            expand(&empty_include).err(),
            Some(MatrixError::EmptyEntry("include"))
        );

        let empty_exclude = object(vec![
            ("os", strings(&["linux"])),
            ("exclude", Value::array(vec![Value::object(Object::new())])),
        ]);
        assert_eq!(
            expand(&empty_exclude).err(),
            Some(MatrixError::EmptyEntry("exclude"))
        );

        let bad_include = object(vec![("include", Value::string("x"))]);
        assert_eq!(
            expand(&bad_include).err(),
            Some(MatrixError::NotAListOfMappings("include"))
        );

        let bad_entry = object(vec![("include", strings(&["x"]))]);
        assert_eq!(
            expand(&bad_entry).err(),
            Some(MatrixError::EntryNotAMapping("include"))
        );

        let only_empty_include = object(vec![("include", Value::array(Vec::new()))]);
        assert_eq!(
            expand(&only_empty_include).err(),
            Some(MatrixError::NoVectors)
        );
    }

    #[test]
    fn deeply_nested_values_stop_at_the_depth_limit() {
        let mut deep = Value::string("leaf");
        for _ in 0..200 {
            deep = Value::array(vec![deep]);
        }
        let matrix = object(vec![("v", Value::array(vec![deep]))]);
        assert_eq!(expand(&matrix).err(), Some(MatrixError::TooDeep));
    }

    #[test]
    fn exclude_compares_nested_sequences_by_index() {
        let cfg = |tag: &str| Value::object(object(vec![("tags", strings(&[tag, "x"]))]));
        let matrix = object(vec![
            ("cfg", Value::array(vec![cfg("a"), cfg("b")])),
            (
                "exclude",
                Value::array(vec![Value::object(object(vec![(
                    "CFG",
                    Value::object(object(vec![("tags", strings(&["B"]))])),
                )]))]),
            ),
        ]);
        let legs = expand(&matrix).unwrap_or_default();
        assert_eq!(legs.len(), 1);
        assert_eq!(legs[0].display_segments, vec!["a", "x"]);
    }
}

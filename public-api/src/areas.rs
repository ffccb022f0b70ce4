//! The list of areas, `AreaNameEnum.csv`: a header line, then one `number,name` line per area (CRLF line
//! endings). The list is part of the product: `public-api/data/AreaNameEnum.csv` is compiled into every binary
//! ([`Areas::builtin`]), so no service reads a file to know its areas; a file given at start
//! ([`Areas::load`]) overrides it. [`Area`] accepts the numbers 1 to [`Area::COUNT`], and parsing checks that a
//! list names exactly those, so the two can never disagree silently.

use std::path::Path;

use anyhow::{bail, ensure, Context};

use crate::values::Area;

/// The names of the areas, by number.
#[derive(Debug, Clone)]
pub struct Areas {
    /// `names[n - 1]` is the name of area `n`.
    names: Vec<String>,
}

/// One area of the list, as the public API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AreaName {
    /// What the rides routes take as `source` and `destination`: 1 to 198.
    #[schema(example = 6)]
    pub number: u16,
    #[schema(example = "Thanisandra")]
    pub name: String,
}

/// The area list as the repository holds it, compiled in.
pub const BUILTIN_CSV: &str = include_str!("../data/AreaNameEnum.csv");

impl Areas {
    /// The compiled-in list. Its parse is checked by a unit test, so it cannot fail in a released binary.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN_CSV).expect("the compiled-in area list is valid (tested)")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the area list {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the area list {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        lines
            .next()
            .context("the file is empty: expected a header line")?;
        let mut names = Vec::new();
        for (i, line) in lines.enumerate() {
            let line_no = i + 2;
            if line.is_empty() {
                continue;
            }
            let Some((number, name)) = line.split_once(',') else {
                bail!("line {line_no}: expected `number,name`, got {line:?}");
            };
            let number: usize = number
                .trim()
                .parse()
                .with_context(|| format!("line {line_no}: {number:?} is not an area number"))?;
            ensure!(
                number == names.len() + 1,
                "line {line_no}: expected area {}, got {number}",
                names.len() + 1
            );
            names.push(name.trim().to_owned());
        }
        ensure!(
            names.len() == usize::from(Area::COUNT),
            "the file lists {} areas; the services accept exactly 1 to {}",
            names.len(),
            Area::COUNT
        );
        Ok(Self { names })
    }

    pub fn name(&self, area: Area) -> &str {
        &self.names[usize::from(area.number()) - 1]
    }

    /// Every area with its name, by number: what `GET /api/v1/areas` answers.
    pub fn entries(&self) -> Vec<AreaName> {
        self.names
            .iter()
            .zip(1u16..)
            .map(|(name, number)| AreaName {
                number,
                name: name.clone(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(count: usize) -> String {
        let mut s = "Area No,Area Name\r\n".to_owned();
        for n in 1..=count {
            s.push_str(&format!("{n},Area {n}\r\n"));
        }
        s
    }

    #[test]
    fn the_compiled_in_area_list_has_198_areas_with_their_names() {
        let areas = Areas::parse(BUILTIN_CSV).unwrap();
        assert_eq!(areas.len(), 198);
        assert_eq!(areas.name(Area::new(1).unwrap()), "Kempegowda Ward");
        assert_eq!(areas.name(Area::new(198).unwrap()), "Hemmigepura");
        assert_eq!(Areas::builtin().names, areas.names);
        let entries = areas.entries();
        assert_eq!(entries.len(), 198);
        assert_eq!(
            entries[197],
            AreaName {
                number: 198,
                name: "Hemmigepura".to_owned()
            }
        );
    }

    #[test]
    fn a_list_loaded_from_a_file_overrides_and_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("areas.csv");
        std::fs::write(&path, csv(198)).unwrap();
        assert_eq!(
            Areas::load(&path).unwrap().name(Area::new(7).unwrap()),
            "Area 7"
        );
        let missing = Areas::load(&dir.path().join("missing.csv")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("missing.csv"),
            "{missing:#}"
        );
    }

    #[test]
    fn a_list_without_a_final_newline_or_with_lf_endings_loads() {
        let text = csv(198);
        assert!(Areas::parse(text.trim_end()).is_ok());
        assert!(Areas::parse(&text.replace("\r\n", "\n")).is_ok());
    }

    #[test]
    fn a_list_that_does_not_match_the_area_numbers_is_refused() {
        assert!(Areas::parse("").is_err());
        assert!(Areas::parse(&csv(197)).is_err());
        assert!(Areas::parse(&csv(199)).is_err());
        assert!(Areas::parse(&csv(198).replace("\r\n5,", "\r\n6,")).is_err());
        assert!(Areas::parse(&csv(198).replace("\r\n5,Area 5", "\r\n5 Area 5")).is_err());
    }
}

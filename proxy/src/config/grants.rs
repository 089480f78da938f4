//! What a client may reach of the MCP server: `tools`, `resources` and `prompts`, each a list of
//! names (URIs for resources) and `*` globs. Absent means everything of that kind, `[]` nothing.
//! `[[ingress.clients]]` and `[[ingress.oauth.scope_grants]]` both carry them.

use serde::{Deserialize, Deserializer};

/// A name or a pattern where `*` matches any run of characters (`get_activity_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = name.strip_prefix(first) else { return false };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.len() > 256 || text.chars().any(char::is_control) {
            return Err(serde::de::Error::custom(
                "expected names or `*` patterns of 1-256 printable characters",
            ));
        }
        Ok(Glob(text))
    }
}

/// The kinds of MCP primitive a grant can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tools/list`, `tools/call` (by name).
    Tool,
    /// `resources/list`, `resources/read`, `resources/subscribe` (by URI).
    Resource,
    /// `prompts/list`, `prompts/get` (by name).
    Prompt,
}

impl Kind {
    /// `tool`, `resource`, `prompt` (audit and metrics labels).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Resource => "resource",
            Kind::Prompt => "prompt",
        }
    }
}

/// One client's (or one scope's) grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Grants {
    /// Tools by name; every tool when absent.
    pub tools: Option<Vec<Glob>>,
    /// Resources by URI; every resource when absent.
    pub resources: Option<Vec<Glob>>,
    /// Prompts by name; every prompt when absent.
    pub prompts: Option<Vec<Glob>>,
}

impl Grants {
    /// The list for `kind`; `None` when every one is granted.
    pub fn of(&self, kind: Kind) -> Option<&[Glob]> {
        match kind {
            Kind::Tool => self.tools.as_deref(),
            Kind::Resource => self.resources.as_deref(),
            Kind::Prompt => self.prompts.as_deref(),
        }
    }

    /// Whether any kind is restricted (then keyward reads the client's MCP messages).
    pub fn restricts(&self) -> bool {
        self.tools.is_some() || self.resources.is_some() || self.prompts.is_some()
    }

    /// Whether `name` of `kind` is granted.
    pub fn allows(&self, kind: Kind, name: &str) -> bool {
        self.of(kind).is_none_or(|globs| globs.iter().any(|g| g.matches(name)))
    }

    /// These grants widened by `more`, kind by kind: a kind left open here stays open; a
    /// restricted one also allows what `more` lists for it.
    pub fn widened(&self, more: &Grants) -> Grants {
        let widen = |mine: &Option<Vec<Glob>>, theirs: &Option<Vec<Glob>>| {
            mine.as_ref().map(|mine| {
                let mut all = mine.clone();
                all.extend(theirs.iter().flatten().cloned());
                all
            })
        };
        Grants {
            tools: widen(&self.tools, &more.tools),
            resources: widen(&self.resources, &more.resources),
            prompts: widen(&self.prompts, &more.prompts),
        }
    }
}

/// `[[ingress.oauth.scope_grants]]`: what a token carrying `scope` (in `scp` or `roles`) may
/// also reach, beyond its client's grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeGrant {
    /// The scope or app role.
    pub scope: String,
    /// Tools by name.
    pub tools: Option<Vec<Glob>>,
    /// Resources by URI.
    pub resources: Option<Vec<Glob>>,
    /// Prompts by name.
    pub prompts: Option<Vec<Glob>>,
}

impl ScopeGrant {
    /// Its grants.
    pub fn grants(&self) -> Grants {
        Grants {
            tools: self.tools.clone(),
            resources: self.resources.clone(),
            prompts: self.prompts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        Glob(text.to_owned())
    }

    #[test]
    fn globs_match_names_and_star_runs() {
        for (pattern, name, expected) in [
            ("get_sleep_by_date", "get_sleep_by_date", true),
            ("get_sleep_by_date", "get_sleep_by_date_range", false),
            ("get_activity_*", "get_activity_records", true),
            ("get_activity_*", "get_activity_", true),
            ("get_activity_*", "get_sleep_records", false),
            ("*_records", "get_food_records", true),
            ("get_*_by_date", "get_food_by_date", true),
            ("get_*_by_date", "get_food_by_date_range", false),
            ("*", "anything", true),
            ("a*a", "a", false),
            ("a*b*c", "a-b-b-c", true),
            ("health://*/2025", "health://sleep/2025", true),
        ] {
            assert_eq!(glob(pattern).matches(name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn absent_is_everything_empty_is_nothing_and_widening_keeps_open_kinds_open() {
        let open = Grants::default();
        assert!(!open.restricts() && open.allows(Kind::Tool, "x"));
        let none = Grants { tools: Some(vec![]), ..Grants::default() };
        assert!(
            none.restricts() && !none.allows(Kind::Tool, "x") && none.allows(Kind::Prompt, "p")
        );
        let scope =
            Grants { tools: Some(vec![glob("x")]), prompts: Some(vec![]), ..Grants::default() };
        let widened = none.widened(&scope);
        assert!(widened.allows(Kind::Tool, "x") && !widened.allows(Kind::Tool, "y"));
        assert!(widened.allows(Kind::Prompt, "p"), "an open kind stays open");
    }
}

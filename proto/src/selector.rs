//! [`v1::Selector`]: which containers a request is about, checked once and
//! turned into the matcher the agent's capture engine and streams use.

use std::fmt;
use std::sync::Arc;

use portwarden_core::Container;

use crate::v1;

/// Why a selector was refused; the API answers `INVALID_ARGUMENT` with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSelector(String);

impl fmt::Display for InvalidSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidSelector {}

/// The shortest id prefix a selector takes, so `ab` does not match half
/// the host.
const MIN_ID_PREFIX: usize = 4;

impl v1::Selector {
    /// A selector for these names or id prefixes, or this pod (`NS/NAME`).
    pub fn new(containers: &[String], pod: Option<&str>) -> Self {
        v1::Selector { containers: containers.to_vec(), pod: pod.unwrap_or_default().to_owned() }
    }

    /// True when it selects every container.
    pub fn is_everything(&self) -> bool {
        self.containers.is_empty() && self.pod.is_empty()
    }

    /// Checks the selector and returns its matcher: a container matches by
    /// name, by id prefix, or by pod.
    pub fn matcher(&self) -> Result<portwarden_core::Selector, InvalidSelector> {
        for c in &self.containers {
            if c.trim().is_empty() {
                return Err(InvalidSelector("an empty container name or id".into()));
            }
            if c.chars().any(char::is_control) {
                return Err(InvalidSelector(format!("container `{}` has control characters", c.escape_debug())));
            }
        }
        let pod = if self.pod.is_empty() {
            None
        } else {
            match self.pod.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Some((ns.to_owned(), name.to_owned()))
                }
                _ => {
                    return Err(InvalidSelector(format!("pod `{}` is not NAMESPACE/NAME", self.pod.escape_debug())));
                }
            }
        };
        let wanted = self.containers.clone();
        Ok(Arc::new(move |c: &Container| {
            if wanted.is_empty() && pod.is_none() {
                return true;
            }
            let by_name = wanted
                .iter()
                .any(|w| c.name == *w || (w.len() >= MIN_ID_PREFIX && c.id.as_str().starts_with(w.as_str())));
            let by_pod = pod
                .as_ref()
                .is_some_and(|(ns, name)| c.pod.as_ref().is_some_and(|p| p.namespace == *ns && p.name == *name));
            by_name || by_pod
        }))
    }
}

#[cfg(test)]
mod tests {
    use portwarden_core::{ContainerId, ContainerState, Pod, RuntimeName};

    use super::*;

    fn container(name: &str, id: &str, pod: Option<(&str, &str)>) -> Container {
        Container {
            name: name.into(),
            state: ContainerState::Running,
            pod: pod.map(|(ns, n)| Pod { namespace: ns.into(), name: n.into(), uid: String::new() }),
            ..Container::new(RuntimeName::from_static("docker"), ContainerId::new(id))
        }
    }

    #[test]
    fn matches_by_name_prefix_and_pod() {
        let web = container("web", "abcdef0123", None);
        let db = container("db", "99990000", Some(("prod", "db-0")));
        let m = v1::Selector::new(&["web".into()], None).matcher().unwrap();
        assert!(m(&web) && !m(&db));
        let m = v1::Selector::new(&["abcd".into()], None).matcher().unwrap();
        assert!(m(&web));
        let m = v1::Selector::new(&["abc".into()], None).matcher().unwrap();
        assert!(!m(&web), "prefixes shorter than 4 do not match");
        let m = v1::Selector::new(&[], Some("prod/db-0")).matcher().unwrap();
        assert!(m(&db) && !m(&web));
        let m = v1::Selector::default().matcher().unwrap();
        assert!(m(&db) && m(&web));
    }

    #[test]
    fn bad_selectors_say_why() {
        let e = v1::Selector::new(&[], Some("justaname")).matcher().err().unwrap();
        assert!(e.to_string().contains("NAMESPACE/NAME"), "{e}");
        assert!(v1::Selector::new(&[], Some("a/b/c")).matcher().is_err());
        assert!(v1::Selector::new(&["".into()], None).matcher().is_err());
        assert!(v1::Selector::new(&["a\nb".into()], None).matcher().is_err());
    }
}

//! Suricata's address and port groups (`HOME_NET`, `HTTP_PORTS`, ...):
//! their values are checked here, before Suricata starts, so that a typo is
//! reported by the group's name instead of as a rule load failure later.
//!
//! The grammar is Suricata's: `any`, a single value, a `$VARIABLE`, a
//! negation `!x`, or a bracketed list `[a, b, ...]` of any of these.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Which kind of group a value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupKind {
    /// `vars.address-groups`: IPs, CIDRs.
    Address,
    /// `vars.port-groups`: ports and `low:high` ranges.
    Port,
}

/// Checks every group's value; variables may name any group of the same
/// kind, given here or already in Suricata's default config (`known`).
pub(crate) fn validate(groups: &BTreeMap<String, String>, kind: GroupKind, known: &[&str]) -> Result<(), String> {
    for (name, value) in groups {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{name}` is not a group name (letters, digits and `_`)"));
        }
        let exists = |var: &str| groups.contains_key(var) || known.contains(&var);
        check(value.trim(), kind, &exists).map_err(|e| format!("{name} = \"{value}\": {e}"))?;
    }
    Ok(())
}

fn check(value: &str, kind: GroupKind, exists: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("empty value".into());
    }
    if let Some(rest) = value.strip_prefix('!') {
        return check(rest, kind, exists);
    }
    if let Some(inner) = value.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or("`[` without its `]`")?;
        return split_list(inner)?.into_iter().try_for_each(|item| check(item, kind, exists));
    }
    if let Some(var) = value.strip_prefix('$') {
        return if exists(var) { Ok(()) } else { Err(format!("`${var}` names no group")) };
    }
    if value == "any" {
        return Ok(());
    }
    match kind {
        GroupKind::Address => address(value),
        GroupKind::Port => port(value),
    }
}

/// Splits a list's inside at its top-level commas.
fn split_list(inner: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut items) = (0i32, 0, Vec::new());
    for (i, c) in inner.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err("`]` without its `[`".into());
        }
    }
    if depth != 0 {
        return Err("`[` without its `]`".into());
    }
    items.push(&inner[start..]);
    Ok(items)
}

fn address(value: &str) -> Result<(), String> {
    let bad = || format!("`{value}` is not an IP address, CIDR or range");
    if let Some((ip, bits)) = value.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        // Suricata also takes a dotted netmask after the slash.
        let ok = bits.parse::<u8>().is_ok_and(|b| b <= max) || (ip.is_ipv4() && bits.parse::<IpAddr>().is_ok());
        return if ok { Ok(()) } else { Err(bad()) };
    }
    if let Some((low, high)) = value.split_once('-') {
        return match (low.parse::<IpAddr>(), high.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) if a.is_ipv4() == b.is_ipv4() => Ok(()),
            _ => Err(bad()),
        };
    }
    value.parse::<IpAddr>().map(|_| ()).map_err(|_| bad())
}

fn port(value: &str) -> Result<(), String> {
    let number = |s: &str| s.is_empty() || s.parse::<u16>().is_ok();
    let ok = match value.split_once(':') {
        Some((low, high)) => !(low.is_empty() && high.is_empty()) && number(low) && number(high),
        None => value.parse::<u16>().is_ok(),
    };
    if ok { Ok(()) } else { Err(format!("`{value}` is not a port or `low:high` range")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str, kind: GroupKind) -> Result<(), String> {
        validate(&BTreeMap::from([(name.to_owned(), value.to_owned())]), kind, &["HOME_NET", "HTTP_PORTS"])
    }

    #[test]
    fn suricata_values_pass() {
        for v in
            ["[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]", "!$HOME_NET", "any", "fd00::/8", "[10.0.0.1, ![10.0.0.2]]"]
        {
            assert_eq!(one("HOME_NET", v, GroupKind::Address), Ok(()), "{v}");
        }
        for v in ["80", "[$HTTP_PORTS,8080]", "!80", "1024:", ":1023", "[1:10,!5]"] {
            assert_eq!(one("HTTP_PORTS", v, GroupKind::Port), Ok(()), "{v}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let e = one("HOME_NET", "[10.0.0.0/33]", GroupKind::Address).unwrap_err();
        assert!(e.contains("HOME_NET") && e.contains("10.0.0.0/33"), "{e}");
        assert!(one("HOME_NET", "$NOPE", GroupKind::Address).unwrap_err().contains("$NOPE"));
        assert!(one("HOME_NET", "[10.0.0.1", GroupKind::Address).is_err());
        assert!(one("WEB", "70000", GroupKind::Port).is_err());
        assert!(one("bad name", "80", GroupKind::Port).is_err());
    }
}

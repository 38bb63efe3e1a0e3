//! The CNI environment: `CNI_COMMAND` and the variables each command needs,
//! parsed and validated from pairs the caller passes in (never read from
//! the process environment here).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::error::CniError;

/// Environment variable names of the CNI protocol.
pub const CNI_COMMAND: &str = "CNI_COMMAND";
/// The container id variable.
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
/// The network namespace path variable.
pub const CNI_NETNS: &str = "CNI_NETNS";
/// The interface name variable.
pub const CNI_IFNAME: &str = "CNI_IFNAME";
/// The `K=V;K=V` arguments variable.
pub const CNI_ARGS: &str = "CNI_ARGS";
/// The `:`-separated plugin search path variable.
pub const CNI_PATH: &str = "CNI_PATH";

/// The longest interface name Linux accepts (IFNAMSIZ - 1), in bytes.
pub const MAX_INTERFACE_NAME_LENGTH: usize = 15;

/// A CNI operation, from `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    /// Attach the container to the network.
    Add,
    /// Detach it (best effort, idempotent).
    Del,
    /// Verify an attachment (spec 0.4.0 and later).
    Check,
    /// Report readiness to service ADD (spec 1.1.0).
    Status,
    /// Remove stale resources (spec 1.1.0).
    Gc,
    /// Report the supported versions.
    Version,
}

impl CniCommand {
    /// The command as `CNI_COMMAND` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
            CniCommand::Version => "VERSION",
        }
    }

    /// Parses `CNI_COMMAND` (exact, upper case); unknown is code 4
    /// `unknown CNI_COMMAND: <value>`.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        match text {
            "ADD" => Ok(CniCommand::Add),
            "DEL" => Ok(CniCommand::Del),
            "CHECK" => Ok(CniCommand::Check),
            "STATUS" => Ok(CniCommand::Status),
            "GC" => Ok(CniCommand::Gc),
            "VERSION" => Ok(CniCommand::Version),
            other => Err(CniError::invalid_environment(format!(
                "unknown CNI_COMMAND: {other}"
            ))),
        }
    }

    /// Whether this command acts on one attachment and so needs
    /// `CNI_CONTAINERID` and `CNI_IFNAME` (ADD, DEL, CHECK).
    pub fn needs_attachment(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Del | CniCommand::Check)
    }

    /// Whether this command requires `CNI_NETNS` (ADD and CHECK; optional on DEL).
    pub fn needs_netns(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Check)
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for CniCommand {
    type Err = CniError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The parsed CNI environment of one call.
///
/// `container_id`, `netns` and `ifname` are `Some` exactly when the command
/// uses them and they were set: always for ADD and CHECK, and for DEL except
/// `netns`, which DEL may lack. STATUS, GC and VERSION ignore them, so they
/// are `None` there whatever the environment held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// The operation.
    pub command: CniCommand,
    /// `CNI_CONTAINERID`, validated.
    pub container_id: Option<String>,
    /// `CNI_NETNS`, the path of the network namespace.
    pub netns: Option<String>,
    /// `CNI_IFNAME`, validated.
    pub ifname: Option<String>,
    /// `CNI_ARGS` as ordered key/value pairs (duplicates kept).
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on `:` with empty entries dropped.
    pub cni_path: Vec<String>,
}

impl CniEnv {
    /// Parses and validates the CNI variables from `vars` (name/value pairs;
    /// a later pair wins over an earlier one of the same name; an empty value
    /// counts as unset, as in the reference).
    ///
    /// Errors, all code 4: an unknown command; every missing required
    /// variable at once (`required env variables [CNI_NETNS,CNI_IFNAME]
    /// missing`); an invalid container id, interface name or `CNI_ARGS` pair.
    pub fn from_vars<I, K, V>(vars: I) -> Result<CniEnv, CniError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        const NAMES: [&str; 6] = [
            CNI_COMMAND,
            CNI_CONTAINERID,
            CNI_NETNS,
            CNI_IFNAME,
            CNI_ARGS,
            CNI_PATH,
        ];
        let mut values: HashMap<&'static str, String> = HashMap::new();
        for (name, value) in vars {
            if let Some(known) = NAMES.iter().find(|known| **known == name.as_ref()) {
                values.insert(known, value.as_ref().to_owned());
            }
        }
        let mut take = |name: &str| values.remove(name).filter(|value| !value.is_empty());

        let Some(command_text) = take(CNI_COMMAND) else {
            return Err(missing_variables(&[CNI_COMMAND]));
        };
        let command = CniCommand::parse(&command_text)?;
        let container_id = take(CNI_CONTAINERID).filter(|_| command.needs_attachment());
        let netns = take(CNI_NETNS).filter(|_| command.needs_attachment());
        let ifname = take(CNI_IFNAME).filter(|_| command.needs_attachment());

        let mut missing = Vec::new();
        if command.needs_attachment() && container_id.is_none() {
            missing.push(CNI_CONTAINERID);
        }
        if command.needs_netns() && netns.is_none() {
            missing.push(CNI_NETNS);
        }
        if command.needs_attachment() && ifname.is_none() {
            missing.push(CNI_IFNAME);
        }
        if !missing.is_empty() {
            return Err(missing_variables(&missing));
        }
        if let Some(container_id) = &container_id {
            validate_container_id(container_id)?;
        }
        if let Some(ifname) = &ifname {
            validate_interface_name(ifname)?;
        }
        let args = match take(CNI_ARGS) {
            Some(text) => parse_cni_args(&text)?,
            None => Vec::new(),
        };
        let cni_path = take(CNI_PATH)
            .map(|text| {
                text.split(':')
                    .filter(|entry| !entry.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            cni_path,
        })
    }

    /// The value of the last `CNI_ARGS` pair named `key`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

fn missing_variables(names: &[&str]) -> CniError {
    CniError::invalid_environment(format!(
        "required env variables [{}] missing",
        names.join(",")
    ))
}

/// Parses `CNI_ARGS` (`K=V;K=V`) into ordered pairs, keeping duplicates.
/// Each `;`-separated pair is split on its first `=`; the key must be
/// non-empty. An empty string gives no pairs. A pair without `=` or with an
/// empty key (including an empty pair from `;;` or a trailing `;`) is code 4
/// naming the pair.
///
/// An empty value (`K8S_POD_UID=`) is accepted: libcni-based runtimes send
/// one when a field is unknown and the reference parser accepts it.
pub fn parse_cni_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(CniError::invalid_environment(format!(
                "invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// Formats pairs back into `CNI_ARGS` form (`K=V;K=V`), for delegates.
pub fn format_cni_args(args: &[(String, String)]) -> String {
    let pairs: Vec<String> = args
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    pairs.join(";")
}

/// Whether `text` matches `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the rule for
/// container ids and network names.
pub(crate) fn is_cni_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// Checks a container id: non-empty and matching
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`; code 4 otherwise.
pub fn validate_container_id(container_id: &str) -> Result<(), CniError> {
    if container_id.is_empty() {
        return Err(CniError::invalid_environment("container id is empty"));
    }
    if !is_cni_identifier(container_id) {
        return Err(CniError::invalid_environment(format!(
            "invalid container id {container_id:?}: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

/// Checks an interface name as the kernel and the reference do: non-empty,
/// at most 15 bytes, not `.` or `..`, and no `/`, `:` or whitespace.
/// Code 4 quoting the name. Usable on its own for annotation-requested names.
pub fn validate_interface_name(ifname: &str) -> Result<(), CniError> {
    let problem = if ifname.is_empty() {
        Some(String::from("is empty"))
    } else if ifname.len() > MAX_INTERFACE_NAME_LENGTH {
        Some(format!("is longer than {MAX_INTERFACE_NAME_LENGTH} bytes"))
    } else if ifname == "." || ifname == ".." {
        Some(String::from("must not be '.' or '..'"))
    } else if ifname
        .chars()
        .any(|character| character == '/' || character == ':' || character.is_whitespace())
    {
        Some(String::from("must not contain '/', ':' or whitespace"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(CniError::invalid_environment(format!(
            "invalid interface name {ifname:?}: {problem}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        CniEnv::from_vars(pairs.iter().copied())
    }

    const FULL_ADD: [(&str, &str); 6] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        ),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ];

    #[test]
    fn command_parses_every_spelling_and_rejects_others() {
        for command in [
            CniCommand::Add,
            CniCommand::Del,
            CniCommand::Check,
            CniCommand::Status,
            CniCommand::Gc,
            CniCommand::Version,
        ] {
            assert_eq!(CniCommand::parse(command.as_str()).unwrap(), command);
            assert_eq!(command.to_string().parse::<CniCommand>().unwrap(), command);
        }
        let error = CniCommand::parse("FOO").unwrap_err();
        assert_eq!(error.code, 4);
        assert_eq!(error.msg, "unknown CNI_COMMAND: FOO");
        assert_eq!(CniCommand::parse("add").unwrap_err().code, 4);
    }

    #[test]
    fn full_add_environment_parses() {
        let parsed = env(&FULL_ADD).unwrap();
        assert_eq!(parsed.command, CniCommand::Add);
        assert_eq!(parsed.container_id.as_deref(), Some("abc123"));
        assert_eq!(parsed.netns.as_deref(), Some("/var/run/netns/pod"));
        assert_eq!(parsed.ifname.as_deref(), Some("eth0"));
        assert_eq!(
            parsed.args,
            vec![
                ("IgnoreUnknown".to_owned(), "1".to_owned()),
                ("K8S_POD_NAMESPACE".to_owned(), "default".to_owned()),
                ("K8S_POD_NAME".to_owned(), "web".to_owned()),
            ]
        );
        assert_eq!(parsed.arg("K8S_POD_NAME"), Some("web"));
        assert_eq!(parsed.arg("MISSING"), None);
        assert_eq!(
            parsed.cni_path,
            vec!["/opt/cni/bin".to_owned(), "/usr/lib/cni".to_owned()]
        );
    }

    #[test]
    fn accepts_a_hash_map() {
        let vars: HashMap<String, String> = FULL_ADD
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        assert_eq!(CniEnv::from_vars(&vars).unwrap(), env(&FULL_ADD).unwrap());
    }

    #[test]
    fn unrelated_variables_are_ignored_and_later_pairs_win() {
        let mut pairs = FULL_ADD.to_vec();
        pairs.push(("PATH", "/bin"));
        pairs.push(("CNI_IFNAME", "net1"));
        assert_eq!(env(&pairs).unwrap().ifname.as_deref(), Some("net1"));
    }

    #[test]
    fn missing_command_is_code_4() {
        let error = env(&[("CNI_CONTAINERID", "abc")]).unwrap_err();
        assert_eq!(error.code, 4);
        assert_eq!(error.msg, "required env variables [CNI_COMMAND] missing");
        assert_eq!(env(&[("CNI_COMMAND", "")]).unwrap_err().msg, error.msg);
    }

    #[test]
    fn unknown_command_is_reported_before_missing_variables() {
        let error = env(&[("CNI_COMMAND", "FOO")]).unwrap_err();
        assert_eq!(
            (error.code, error.msg.as_str()),
            (4, "unknown CNI_COMMAND: FOO")
        );
    }

    #[test]
    fn add_and_check_list_every_missing_variable() {
        for command in ["ADD", "CHECK"] {
            let error = env(&[("CNI_COMMAND", command)]).unwrap_err();
            assert_eq!(error.code, 4);
            assert_eq!(
                error.msg,
                "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing"
            );
            let error = env(&[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_NETNS", ""),
            ])
            .unwrap_err();
            assert_eq!(
                error.msg,
                "required env variables [CNI_NETNS,CNI_IFNAME] missing"
            );
        }
    }

    #[test]
    fn del_does_not_need_netns() {
        let parsed = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(parsed.command, CniCommand::Del);
        assert_eq!(parsed.netns, None);
        let error = env(&[("CNI_COMMAND", "DEL"), ("CNI_NETNS", "/x")]).unwrap_err();
        assert_eq!(
            error.msg,
            "required env variables [CNI_CONTAINERID,CNI_IFNAME] missing"
        );
        let with_netns = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
        ])
        .unwrap();
        assert_eq!(with_netns.netns.as_deref(), Some("/x"));
    }

    #[test]
    fn status_gc_and_version_need_only_the_command_and_ignore_the_rest() {
        for (command, expected) in [
            ("STATUS", CniCommand::Status),
            ("GC", CniCommand::Gc),
            ("VERSION", CniCommand::Version),
        ] {
            let parsed = env(&[("CNI_COMMAND", command)]).unwrap();
            assert_eq!(parsed.command, expected);
            let ignored = env(&[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "$bad$"),
                ("CNI_IFNAME", "a/b"),
                ("CNI_NETNS", "/x"),
                ("CNI_PATH", "/opt/cni/bin"),
            ])
            .unwrap();
            assert_eq!(
                (ignored.container_id, ignored.ifname, ignored.netns),
                (None, None, None)
            );
            assert_eq!(ignored.cni_path, vec!["/opt/cni/bin".to_owned()]);
        }
    }

    #[test]
    fn invalid_container_id_is_code_4_quoting_it() {
        for bad in ["-abc", "_abc", ".abc", "ab c", "ab/c", "abc$", "ä"] {
            let mut pairs = FULL_ADD.to_vec();
            pairs.push(("CNI_CONTAINERID", bad));
            let error = env(&pairs).unwrap_err();
            assert_eq!(error.code, 4, "{bad}");
            assert!(error.msg.contains(&format!("{bad:?}")), "{}", error.msg);
        }
        for good in ["a", "0", "A-b_c.d", "3f2a9c0e1d"] {
            assert!(validate_container_id(good).is_ok(), "{good}");
        }
        assert_eq!(validate_container_id("").unwrap_err().code, 4);
    }

    #[test]
    fn invalid_interface_name_in_env_is_code_4_quoting_it() {
        let mut pairs = FULL_ADD.to_vec();
        pairs.push(("CNI_IFNAME", "eth 0"));
        let error = env(&pairs).unwrap_err();
        assert_eq!(error.code, 4);
        assert_eq!(
            error.msg,
            "invalid interface name \"eth 0\": must not contain '/', ':' or whitespace"
        );
    }

    #[test]
    fn interface_name_rules() {
        for good in [
            "eth0",
            "net1",
            "a",
            "abcdefghijklmno",
            "vlan.100",
            "eth-0_x",
        ] {
            assert!(validate_interface_name(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "is empty"),
            ("abcdefghijklmnop", "longer than 15 bytes"),
            ("ééééééé€", "longer than 15 bytes"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("a/b", "'/'"),
            ("a:b", "'/'"),
            ("a\tb", "whitespace"),
            ("a\u{a0}b", "whitespace"),
        ];
        for (name, problem) in cases {
            let error = validate_interface_name(name).unwrap_err();
            assert_eq!(error.code, 4, "{name:?}");
            assert!(error.msg.contains(&format!("{name:?}")), "{}", error.msg);
            assert!(error.msg.contains(problem), "{}", error.msg);
        }
    }

    #[test]
    fn cni_args_pairs_split_once_and_keep_order_and_duplicates() {
        let parsed = parse_cni_args("A=1;B=x=y;A=2;EMPTY=").unwrap();
        let expected: Vec<(String, String)> = [("A", "1"), ("B", "x=y"), ("A", "2"), ("EMPTY", "")]
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        assert_eq!(parsed, expected);
        assert_eq!(parse_cni_args("").unwrap(), Vec::new());
        assert_eq!(format_cni_args(&parsed), "A=1;B=x=y;A=2;EMPTY=");
    }

    #[test]
    fn bad_cni_args_pairs_are_code_4_naming_the_pair() {
        for (text, pair) in [
            ("A=1;NOVALUE", "NOVALUE"),
            ("=1", "=1"),
            ("A=1;;B=2", ""),
            ("A=1;", ""),
        ] {
            let error = parse_cni_args(text).unwrap_err();
            assert_eq!(error.code, 4, "{text}");
            assert!(error.msg.contains(&format!("{pair:?}")), "{}", error.msg);
        }
        let mut pairs = FULL_ADD.to_vec();
        pairs.push(("CNI_ARGS", "K8S_POD_NAME"));
        let error = env(&pairs).unwrap_err();
        assert_eq!(
            error.msg,
            "invalid CNI_ARGS pair \"K8S_POD_NAME\": expected KEY=VALUE"
        );
    }

    #[test]
    fn arg_returns_the_last_duplicate() {
        let mut pairs = FULL_ADD.to_vec();
        pairs.push(("CNI_ARGS", "MAC=a;MAC=b"));
        assert_eq!(env(&pairs).unwrap().arg("MAC"), Some("b"));
    }
}

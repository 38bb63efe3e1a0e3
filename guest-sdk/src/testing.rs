//! A mock host for unit-testing plugin logic natively (`cargo test`).
//!
//! ```ignore
//! let host = MockHost::new().with_link(Netns::Host, "ens3", 1500).with_default_route(Netns::Host, IpFamily::V4, "ens3");
//! let plan = MyMacvlan::handle(&host, testing::request(Command::Add, CONFIG)).unwrap();
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::{
    Command, Dns, Host, IpFamily, IpamHost, Level, LinkInfo, MacvlanMode, Netns, Request, Route,
};

/// A request as a runtime would send it: container `dummy`, netns
/// `/var/run/netns/test`, ifname `net1`, no CNI_ARGS.
pub fn request(command: Command, config: &str) -> Request {
    Request {
        command,
        container_id: "dummy".into(),
        netns: "/var/run/netns/test".into(),
        ifname: "net1".into(),
        args: Vec::new(),
        config: config.into(),
        prev_result: None,
        ipam_result: None,
        valid_attachments: Vec::new(),
        state: None,
    }
}

#[derive(Debug, Clone)]
struct MockLink {
    netns: Netns,
    info: LinkInfo,
    addresses: Vec<String>,
    routes: Vec<Route>,
}

/// Links, default routes, a key/value store and resolv.conf files, all in
/// memory; every log line is recorded.
#[derive(Debug, Default)]
pub struct MockHost {
    links: Vec<MockLink>,
    default_routes: Vec<(Netns, IpFamily, String)>,
    resolv_confs: BTreeMap<String, Dns>,
    store: RefCell<BTreeMap<String, String>>,
    sysctls: BTreeMap<String, String>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a plain link (kind `veth`, up) with a generated MAC.
    pub fn with_link(mut self, netns: Netns, name: &str, mtu: u32) -> Self {
        let index = self.links.len() as u32 + 2;
        self.links.push(MockLink {
            netns,
            info: LinkInfo {
                name: name.into(),
                index,
                mtu,
                mac: format!("02:00:00:00:00:{index:02x}"),
                kind: "veth".into(),
                up: true,
                macvlan_mode: None,
                promisc: false,
                allmulti: false,
                txqueuelen: 1000,
                master: None,
                master_mtu: None,
            },
            addresses: Vec::new(),
            routes: Vec::new(),
        });
        self
    }

    /// Add a macvlan link with addresses and routes (for CHECK tests).
    pub fn with_macvlan(
        mut self,
        name: &str,
        mode: MacvlanMode,
        mac: &str,
        addresses: &[&str],
        routes: Vec<Route>,
    ) -> Self {
        let index = self.links.len() as u32 + 2;
        self.links.push(MockLink {
            netns: Netns::Sandbox,
            info: LinkInfo {
                name: name.into(),
                index,
                mtu: 1500,
                mac: mac.into(),
                kind: "macvlan".into(),
                up: true,
                macvlan_mode: Some(mode),
                promisc: false,
                allmulti: false,
                txqueuelen: 1000,
                master: None,
                master_mtu: None,
            },
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            routes,
        });
        self
    }

    /// Make `name` the link of the default route of `family` in `netns`.
    pub fn with_default_route(mut self, netns: Netns, family: IpFamily, name: &str) -> Self {
        self.default_routes.push((netns, family, name.into()));
        self
    }

    /// Serve `dns` for the resolv.conf at `path`.
    pub fn with_resolv_conf(mut self, path: &str, dns: Dns) -> Self {
        self.resolv_confs.insert(path.into(), dns);
        self
    }

    /// Serve `value` for sysctl `key` (relative to /proc/sys).
    pub fn with_sysctl(mut self, key: &str, value: &str) -> Self {
        self.sysctls.insert(key.into(), value.into());
        self
    }

    /// Pre-populate the IPAM store.
    pub fn with_store_entry(self, key: &str, value: &str) -> Self {
        self.store.borrow_mut().insert(key.into(), value.into());
        self
    }

    /// The IPAM store's contents.
    pub fn store(&self) -> BTreeMap<String, String> {
        self.store.borrow().clone()
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    fn find(&self, netns: Netns, name: &str) -> Option<&MockLink> {
        self.links
            .iter()
            .find(|link| link.netns == netns && link.info.name == name)
    }
}

impl Host for MockHost {
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.into()));
    }
    fn get_link(&self, netns: Netns, name: &str) -> Option<LinkInfo> {
        self.find(netns, name).map(|link| link.info.clone())
    }
    fn default_route_link(&self, netns: Netns, family: IpFamily) -> Option<LinkInfo> {
        self.default_routes
            .iter()
            .find(|(ns, fam, _)| *ns == netns && *fam == family)
            .and_then(|(ns, _, name)| self.get_link(*ns, name))
    }
    fn addresses(&self, netns: Netns, name: &str) -> Vec<String> {
        self.find(netns, name)
            .map(|link| link.addresses.clone())
            .unwrap_or_default()
    }
    fn routes(&self, netns: Netns, name: &str) -> Vec<Route> {
        self.find(netns, name)
            .map(|link| link.routes.clone())
            .unwrap_or_default()
    }
    fn read_sysctl(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.sysctls.get(key).cloned())
    }
}

impl IpamHost for MockHost {
    fn store_get(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.store.borrow().get(key).cloned())
    }
    fn store_list(&self) -> Result<Vec<String>, String> {
        Ok(self.store.borrow().keys().cloned().collect())
    }
    fn store_compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        let mut store = self.store.borrow_mut();
        if store.get(key).map(String::as_str) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => store.insert(key.into(), value.into()),
            None => store.remove(key),
        };
        Ok(true)
    }
    fn store_delete(&self, key: &str) -> Result<bool, String> {
        Ok(self.store.borrow_mut().remove(key).is_some())
    }
    fn read_resolv_conf(&self, path: &str) -> Result<Dns, String> {
        self.resolv_confs
            .get(path)
            .cloned()
            .ok_or_else(|| format!("open {path}: no such file or directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_only_swaps_on_expected_value() {
        let host = MockHost::new();
        assert!(host.store_compare_and_swap("k", None, Some("a")).unwrap());
        assert!(!host.store_compare_and_swap("k", None, Some("b")).unwrap());
        assert!(
            host.store_compare_and_swap("k", Some("a"), Some("b"))
                .unwrap()
        );
        assert_eq!(host.store_get("k").unwrap().as_deref(), Some("b"));
        assert!(host.store_compare_and_swap("k", Some("b"), None).unwrap());
        assert!(!host.store_delete("k").unwrap());
    }

    #[test]
    fn default_route_link_resolves_through_the_link_table() {
        let host = MockHost::new()
            .with_link(Netns::Host, "ens3", 1400)
            .with_default_route(Netns::Host, IpFamily::V4, "ens3");
        assert_eq!(
            host.default_route_link(Netns::Host, IpFamily::V4)
                .unwrap()
                .mtu,
            1400
        );
        assert!(host.default_route_link(Netns::Host, IpFamily::V6).is_none());
        assert!(
            host.default_route_link(Netns::Sandbox, IpFamily::V4)
                .is_none()
        );
    }
}

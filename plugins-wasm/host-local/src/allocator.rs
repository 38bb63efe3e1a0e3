//! Allocation and release against the host's key/value store, in the
//! reference host-local's on-disk format so that the reference binary and
//! this plugin can take turns on one network directory:
//!
//! - one key per reserved address, named by the address in Go's text form
//!   (`10.1.2.2`, `2001:db8:1::2`), holding `<container id>\r\n<ifname>` with
//!   no trailing newline (older releases wrote just the container id);
//! - `last_reserved_ip.<N>` holding the last address reserved in range set
//!   `N`, where the next round-robin search starts;
//! - `lock`, which belongs to the host (it holds the flock for the whole
//!   call) and is never read or written here.

use std::fmt;
use std::net::IpAddr;

use guest_sdk::{Attachment, CniResult, IpConfig, IpamHost, Level, PluginError, code};

use crate::address;
use crate::config::IpamConfig;
use crate::range::{Range, RangeSet};

/// The prefix of the keys that remember the last address of each range set.
pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// How often a write of `last_reserved_ip.<N>` is retried when its value
/// changed between the read and the swap (it cannot while the host holds
/// the lock; this only bounds the loop).
const LAST_RESERVED_ATTEMPTS: usize = 3;

/// Why one range set could not give an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The requested address is its range's gateway.
    RequestedGateway { address: IpAddr },
    /// The requested address is already reserved.
    RequestedUnavailable { address: IpAddr, range_set: String },
    /// This (container, interface) already holds an address of the set.
    Duplicate {
        address: IpAddr,
        container_id: String,
    },
    /// Every address of the set is reserved.
    Exhausted { range_set: String },
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for AllocError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::RequestedGateway { address } => {
                write!(formatter, "requested ip {address} is subnet's gateway")
            }
            AllocError::RequestedUnavailable { address, range_set } => write!(
                formatter,
                "requested IP address {address} is not available in range set {range_set}"
            ),
            AllocError::Duplicate {
                address,
                container_id,
            } => write!(
                formatter,
                "{address} has been allocated to {container_id}, duplicate allocation is not allowed"
            ),
            AllocError::Exhausted { range_set } => {
                write!(
                    formatter,
                    "no IP addresses available in range set: {range_set}"
                )
            }
            AllocError::Store(error) => write!(formatter, "{error}"),
        }
    }
}

impl From<StoreError> for AllocError {
    fn from(error: StoreError) -> Self {
        AllocError::Store(error)
    }
}

/// A store call that failed, with the key it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub operation: &'static str,
    pub key: String,
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(formatter, "store {}: {}", self.operation, self.message)
        } else {
            write!(
                formatter,
                "store {} {}: {}",
                self.operation, self.key, self.message
            )
        }
    }
}

/// Why a host-local command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostLocalError {
    /// `resolvConf` could not be read.
    ResolvConf { path: String, message: String },
    /// Range set `index` could not give an address.
    Range { index: usize, source: AllocError },
    /// Requested addresses that no range set holds.
    RequestedLeft { addresses: Vec<IpAddr> },
    /// CHECK found no reservation of the container.
    NotFound { container_id: String },
    /// The store failed (DEL, CHECK and GC report every failure).
    Store(Vec<StoreError>),
}

impl HostLocalError {
    /// The CNI error code: 11 (try again later) for store failures, 5 for an
    /// unreadable resolv.conf, 999 for the allocation failures the
    /// reference reports as internal errors.
    pub fn code(&self) -> u32 {
        match self {
            HostLocalError::ResolvConf { .. } => code::IO_FAILURE,
            HostLocalError::Range {
                source: AllocError::Store(_),
                ..
            }
            | HostLocalError::Store(_) => code::TRY_AGAIN_LATER,
            _ => code::INTERNAL,
        }
    }
}

impl fmt::Display for HostLocalError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostLocalError::ResolvConf { path, message } => {
                write!(formatter, "failed to read resolvConf {path}: {message}")
            }
            HostLocalError::Range { index, source } => {
                write!(formatter, "failed to allocate for range {index}: {source}")
            }
            HostLocalError::RequestedLeft { addresses } => {
                formatter.write_str("failed to allocate all requested IPs:")?;
                for address in addresses {
                    write!(formatter, " {address}")?;
                }
                Ok(())
            }
            HostLocalError::NotFound { container_id } => write!(
                formatter,
                "host-local: Failed to find address added by container {container_id}"
            ),
            HostLocalError::Store(errors) => {
                for (index, error) in errors.iter().enumerate() {
                    if index > 0 {
                        formatter.write_str("; ")?;
                    }
                    write!(formatter, "{error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for HostLocalError {}

impl From<HostLocalError> for PluginError {
    fn from(error: HostLocalError) -> Self {
        PluginError::new(error.code(), error.to_string())
    }
}

/// Who holds a reservation: what a reservation's value says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The container id, trimmed of whitespace as the reference stores it.
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Owner {
            container_id: container_id.trim().to_owned(),
            ifname: ifname.to_owned(),
        }
    }

    /// The value of a reservation key: `<id>\r\n<ifname>`, no trailing newline.
    pub fn value(&self) -> String {
        format!("{}\r\n{}", self.container_id, self.ifname)
    }

    /// Whether a stored value (whitespace-trimmed) names this owner.
    pub fn holds(&self, stored: &str) -> bool {
        stored.trim() == self.value()
    }

    /// Whether a stored value is this container in the legacy format (the id
    /// alone, written before the interface name was recorded).
    pub fn holds_legacy(&self, stored: &str) -> bool {
        stored.trim() == self.container_id
    }
}

/// One reservation found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    key: String,
    address: IpAddr,
    value: String,
}

/// The store of one network, through the host.
struct Store<'a> {
    host: &'a dyn IpamHost,
}

impl<'a> Store<'a> {
    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.host.store_get(key).map_err(|message| StoreError {
            operation: "get",
            key: key.to_owned(),
            message,
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.host
            .store_compare_and_swap(key, expected, new)
            .map_err(|message| StoreError {
                operation: "compare-and-swap",
                key: key.to_owned(),
                message,
            })
    }

    /// Create `address`'s key for `owner` unless it exists.
    fn reserve(&self, address: IpAddr, owner: &Owner) -> Result<bool, StoreError> {
        self.compare_and_swap(&address.to_string(), None, Some(&owner.value()))
    }

    /// Remove `key` if it still holds `value`.
    fn release(&self, key: &str, value: &str) -> Result<bool, StoreError> {
        self.compare_and_swap(key, Some(value), None)
    }

    /// The address in `last_reserved_ip.<index>`, if it holds one. The
    /// reference parses the value as is (no trimming).
    fn last_reserved(&self, index: usize) -> Result<Option<IpAddr>, StoreError> {
        let key = format!("{LAST_RESERVED_PREFIX}{index}");
        Ok(self.get(&key)?.and_then(|value| address::parse_ip(&value)))
    }

    /// Overwrite `last_reserved_ip.<index>` with `address`.
    fn record_last_reserved(&self, index: usize, address: IpAddr) -> Result<(), StoreError> {
        let key = format!("{LAST_RESERVED_PREFIX}{index}");
        let text = address.to_string();
        for _ in 0..LAST_RESERVED_ATTEMPTS {
            let current = self.get(&key)?;
            if self.compare_and_swap(&key, current.as_deref(), Some(&text))? {
                return Ok(());
            }
        }
        Err(StoreError {
            operation: "compare-and-swap",
            key,
            message: "value kept changing".to_owned(),
        })
    }

    /// Every key that names an address, with its value. Other keys (`lock`,
    /// `last_reserved_ip.*`) are never read. A key that disappears between
    /// the listing and the read is skipped.
    fn reservations(&self) -> Result<(Vec<Reservation>, Vec<StoreError>), StoreError> {
        let keys = self.host.store_list().map_err(|message| StoreError {
            operation: "list",
            key: String::new(),
            message,
        })?;
        let mut reservations = Vec::new();
        let mut errors = Vec::new();
        for key in keys {
            let Some(address) = address::parse_ip(&key) else {
                continue;
            };
            match self.get(&key) {
                Ok(Some(value)) => reservations.push(Reservation {
                    key,
                    address,
                    value,
                }),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        Ok((reservations, errors))
    }

    /// Every reservation, failing on the first store error.
    fn all_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let (reservations, mut errors) = self.reservations()?;
        match errors.pop() {
            Some(error) => Err(error),
            None => Ok(reservations),
        }
    }
}

/// An address reserved during this ADD, so that a failure can undo it.
struct Reserved {
    key: String,
    value: String,
}

/// ADD: one address per range set, then the routes and DNS.
///
/// Requested addresses (CNI_ARGS `IP`, `args.cni.ips`, `runtimeConfig.ips`)
/// are taken in the first range set that holds them; other sets allocate
/// round-robin after `last_reserved_ip.<N>`. On failure every key reserved
/// by this call is removed again, but `last_reserved_ip.<N>` stays advanced,
/// as in the reference (its next ADD skips the released addresses once).
pub fn add(
    host: &dyn IpamHost,
    config: &IpamConfig,
    container_id: &str,
    ifname: &str,
) -> Result<CniResult, HostLocalError> {
    let dns = match &config.resolv_conf {
        Some(path) => {
            Some(
                host.read_resolv_conf(path)
                    .map_err(|message| HostLocalError::ResolvConf {
                        path: path.clone(),
                        message,
                    })?,
            )
        }
        None => None,
    };

    let store = Store { host };
    let owner = Owner::new(container_id, ifname);
    let mut pending_requests: Vec<IpAddr> = Vec::new();
    for requested in &config.requested_ips {
        if !pending_requests.contains(requested) {
            pending_requests.push(*requested);
        }
    }
    // Addresses the owner already holds, read once and only when a range set
    // has no requested address (range sets never overlap, so what this ADD
    // reserves cannot change the answer for a later set).
    let mut owned: Option<Vec<IpAddr>> = None;
    let mut reserved: Vec<Reserved> = Vec::new();
    let mut ips = Vec::with_capacity(config.ranges.len());

    for (index, range_set) in config.ranges.iter().enumerate() {
        let requested = pending_requests
            .iter()
            .position(|address| range_set.contains(*address))
            .map(|position| pending_requests.remove(position));
        let outcome = match requested {
            Some(address) => reserve_requested(&store, range_set, index, address, &owner),
            None => owned_addresses(&store, &owner, &mut owned).and_then(|owned| {
                reserve_next(&store, range_set, index, owned, container_id, &owner)
            }),
        };
        match outcome {
            Ok((address, range)) => {
                reserved.push(Reserved {
                    key: address.to_string(),
                    value: owner.value(),
                });
                ips.push(IpConfig {
                    interface_index: None,
                    address: format!("{address}/{}", range.prefix_len),
                    gateway: Some(range.gateway.to_string()),
                });
            }
            Err(source) => {
                undo(host, &store, &reserved);
                return Err(HostLocalError::Range { index, source });
            }
        }
    }

    if !pending_requests.is_empty() {
        undo(host, &store, &reserved);
        return Err(HostLocalError::RequestedLeft {
            addresses: pending_requests,
        });
    }

    Ok(CniResult {
        interfaces: Vec::new(),
        ips,
        routes: config.routes.clone(),
        dns,
    })
}

fn owned_addresses<'o>(
    store: &Store<'_>,
    owner: &Owner,
    owned: &'o mut Option<Vec<IpAddr>>,
) -> Result<&'o [IpAddr], AllocError> {
    let addresses = match owned.take() {
        Some(addresses) => addresses,
        None => store
            .all_reservations()?
            .into_iter()
            .filter(|reservation| {
                owner.holds(&reservation.value) || owner.holds_legacy(&reservation.value)
            })
            .map(|reservation| reservation.address)
            .collect(),
    };
    Ok(owned.insert(addresses))
}

/// Reserve a requested address (no duplicate check, as in the reference).
fn reserve_requested(
    store: &Store<'_>,
    range_set: &RangeSet,
    index: usize,
    address: IpAddr,
    owner: &Owner,
) -> Result<(IpAddr, Range), AllocError> {
    let range = *range_set
        .range_for(address)
        .ok_or_else(|| AllocError::RequestedUnavailable {
            address,
            range_set: range_set.to_string(),
        })?;
    if address == range.gateway {
        return Err(AllocError::RequestedGateway { address });
    }
    if !store.reserve(address, owner)? {
        return Err(AllocError::RequestedUnavailable {
            address,
            range_set: range_set.to_string(),
        });
    }
    record_or_release(store, index, address, owner)?;
    Ok((address, range))
}

/// Reserve the next free address of the set, round-robin.
fn reserve_next(
    store: &Store<'_>,
    range_set: &RangeSet,
    index: usize,
    owned: &[IpAddr],
    container_id: &str,
    owner: &Owner,
) -> Result<(IpAddr, Range), AllocError> {
    if let Some(address) = owned.iter().find(|address| range_set.contains(**address)) {
        return Err(AllocError::Duplicate {
            address: *address,
            container_id: container_id.to_owned(),
        });
    }
    // An unreadable last address only costs the round-robin position, as in
    // the reference.
    let last_reserved = match store.last_reserved(index) {
        Ok(last) => last,
        Err(error) => {
            store.host.log(
                Level::Warn,
                &format!("error retrieving last reserved ip: {error}"),
            );
            None
        }
    };
    for (candidate, range) in range_set.candidates(last_reserved) {
        if store.reserve(candidate, owner)? {
            record_or_release(store, index, candidate, owner)?;
            return Ok((candidate, *range));
        }
    }
    Err(AllocError::Exhausted {
        range_set: range_set.to_string(),
    })
}

/// Record `address` as the set's last reservation; if that fails, give the
/// address back so the failed ADD leaves no reservation behind.
fn record_or_release(
    store: &Store<'_>,
    index: usize,
    address: IpAddr,
    owner: &Owner,
) -> Result<(), StoreError> {
    if let Err(error) = store.record_last_reserved(index, address) {
        if let Err(release_error) = store.release(&address.to_string(), &owner.value()) {
            store.host.log(
                Level::Error,
                &format!("failed to release {address} after a failed ADD: {release_error}"),
            );
        }
        return Err(error);
    }
    Ok(())
}

/// Remove the keys a failed ADD reserved; failures are logged, the ADD's own
/// error is what the caller sees.
fn undo(host: &dyn IpamHost, store: &Store<'_>, reserved: &[Reserved]) {
    for reservation in reserved {
        if let Err(error) = store.release(&reservation.key, &reservation.value) {
            host.log(
                Level::Error,
                &format!(
                    "failed to release {} after a failed ADD: {error}",
                    reservation.key
                ),
            );
        }
    }
}

/// DEL: remove every reservation of (container, interface); when there is
/// none, remove those the container holds in the legacy format. Unknown
/// containers are fine. `last_reserved_ip.*` is never touched.
pub fn release(
    host: &dyn IpamHost,
    container_id: &str,
    ifname: &str,
) -> Result<(), HostLocalError> {
    let store = Store { host };
    let owner = Owner::new(container_id, ifname);
    let (reservations, mut errors) = store
        .reservations()
        .map_err(|error| HostLocalError::Store(vec![error]))?;
    let current: Vec<&Reservation> = reservations
        .iter()
        .filter(|reservation| owner.holds(&reservation.value))
        .collect();
    let targets = if current.is_empty() {
        reservations
            .iter()
            .filter(|reservation| owner.holds_legacy(&reservation.value))
            .collect()
    } else {
        current
    };
    for reservation in targets {
        if let Err(error) = store.release(&reservation.key, &reservation.value) {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(HostLocalError::Store(errors))
    }
}

/// CHECK: the container holds some address (which one is not checked, as
/// in the reference).
pub fn check(host: &dyn IpamHost, container_id: &str, ifname: &str) -> Result<(), HostLocalError> {
    let store = Store { host };
    let owner = Owner::new(container_id, ifname);
    let reservations = store
        .all_reservations()
        .map_err(|error| HostLocalError::Store(vec![error]))?;
    let found = reservations.iter().any(|reservation| {
        owner.holds(&reservation.value) || owner.holds_legacy(&reservation.value)
    });
    if found {
        Ok(())
    } else {
        Err(HostLocalError::NotFound {
            container_id: container_id.to_owned(),
        })
    }
}

/// GC: remove every reservation whose holder is not a valid attachment. A
/// legacy reservation (container id only) stays while any attachment of
/// that container is valid. Keeps going after a failure and reports all.
pub fn collect_garbage(
    host: &dyn IpamHost,
    valid_attachments: &[Attachment],
) -> Result<(), HostLocalError> {
    let store = Store { host };
    let valid: Vec<Owner> = valid_attachments
        .iter()
        .map(|attachment| Owner::new(&attachment.container_id, &attachment.ifname))
        .collect();
    let (reservations, mut errors) = store
        .reservations()
        .map_err(|error| HostLocalError::Store(vec![error]))?;
    for reservation in reservations {
        let still_valid = valid
            .iter()
            .any(|owner| owner.holds(&reservation.value) || owner.holds_legacy(&reservation.value));
        if still_valid {
            continue;
        }
        match store.release(&reservation.key, &reservation.value) {
            Ok(_) => host.log(
                Level::Info,
                &format!(
                    "released {} held by {:?}: not a valid attachment",
                    reservation.address, reservation.value
                ),
            ),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(HostLocalError::Store(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_are_trimmed_and_compared_trimmed() {
        let owner = Owner::new("  abc\n", "eth0");
        assert_eq!(owner.value(), "abc\r\neth0");
        assert!(owner.holds("abc\r\neth0"));
        assert!(owner.holds(" abc\r\neth0\n"));
        assert!(!owner.holds("abc\r\neth1"));
        assert!(!owner.holds("abc"));
        assert!(owner.holds_legacy("abc\n"));
        assert!(!owner.holds_legacy("abc\r\neth0"));
    }

    #[test]
    fn error_codes_follow_the_failure_kind() {
        let store_error = StoreError {
            operation: "get",
            key: "10.0.0.2".into(),
            message: "eio".into(),
        };
        let range_store = HostLocalError::Range {
            index: 1,
            source: AllocError::Store(store_error.clone()),
        };
        assert_eq!(range_store.code(), 11);
        assert_eq!(
            range_store.to_string(),
            "failed to allocate for range 1: store get 10.0.0.2: eio"
        );
        let exhausted = HostLocalError::Range {
            index: 0,
            source: AllocError::Exhausted {
                range_set: "10.0.0.1-10.0.0.2".into(),
            },
        };
        assert_eq!(exhausted.code(), 999);
        let left = HostLocalError::RequestedLeft {
            addresses: vec![
                "10.0.0.7".parse().expect("ip"),
                "2001:db8::7".parse().expect("ip"),
            ],
        };
        assert_eq!(
            left.to_string(),
            "failed to allocate all requested IPs: 10.0.0.7 2001:db8::7"
        );
        assert_eq!(left.code(), 999);
        let several = HostLocalError::Store(vec![store_error.clone(), store_error]);
        assert_eq!(several.code(), 11);
        assert_eq!(
            several.to_string(),
            "store get 10.0.0.2: eio; store get 10.0.0.2: eio"
        );
        let resolv = HostLocalError::ResolvConf {
            path: "/r".into(),
            message: "denied".into(),
        };
        assert_eq!(PluginError::from(resolv).code, 5);
    }
}

//! fixed-route: a chained multus-wasm plugin that adds fixed routes through
//! the interface the previous plugin of the conflist created.
//!
//! Config: `{"type": "fixed-route", "routes": [{"dst": "10.100.0.0/16", "gw": "192.168.1.254"}]}`

use guest_sdk::{
    AddRoute, Command, Delegate, Host, NetlinkOp, Netns, Plan, PluginError, Request, Route,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Conf {
    routes: Vec<RouteConf>,
}

#[derive(Deserialize)]
struct RouteConf {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

pub struct FixedRoute;

impl Delegate for FixedRoute {
    // The CNI versions this plugin supports; the host refuses others (code 1).
    const CNI_VERSIONS: &'static [&'static str] = &["1.0.0", "1.1.0"];

    fn handle(host: &dyn Host, request: Request) -> Result<Plan, PluginError> {
        let conf: Conf = guest_sdk::netconf::parse(&request.config)?;
        match request.command {
            Command::Add => {
                let mut result = request.prev_result.ok_or_else(|| {
                    PluginError::invalid_config(
                        "fixed-route must follow an interface plugin (no prevResult)",
                    )
                })?;
                let mut ops = Vec::new();
                for route in conf.routes {
                    ops.push(NetlinkOp::AddRoute(AddRoute {
                        link: request.ifname.clone(),
                        dst: route.dst.clone(),
                        gateway: route.gw.clone(),
                        metric: None,
                        table: None,
                        scope: None,
                    }));
                    result.routes.push(Route::new(route.dst, route.gw));
                }
                Ok(Plan {
                    ops,
                    cni_result: Some(result),
                    state: None,
                })
            }
            Command::Check => {
                let present = host.routes(Netns::Sandbox, &request.ifname);
                for route in &conf.routes {
                    if !present.iter().any(|found| found.dst == route.dst) {
                        return Err(PluginError::internal(format!(
                            "route {} is missing on {}",
                            route.dst, request.ifname
                        )));
                    }
                }
                Ok(Plan::empty())
            }
            // The routes go away with the interface.
            Command::Del | Command::Status | Command::Gc => Ok(Plan::empty()),
        }
    }
}

guest_sdk::export_plugin!(delegate: FixedRoute);

#[cfg(test)]
mod tests {
    use super::*;
    use guest_sdk::CniResult;
    use guest_sdk::testing::{MockHost, request};

    const CONFIG: &str =
        r#"{"type":"fixed-route","routes":[{"dst":"10.100.0.0/16","gw":"192.168.1.254"}]}"#;

    #[test]
    fn add_routes_through_the_interface_and_keeps_the_previous_result() {
        let mut add = request(Command::Add, CONFIG);
        add.prev_result = Some(CniResult::empty());
        let plan = FixedRoute::handle(&MockHost::new(), add).unwrap();
        assert_eq!(plan.ops.len(), 1);
        let NetlinkOp::AddRoute(route) = &plan.ops[0] else {
            panic!("expected a route, got {:?}", plan.ops[0]);
        };
        assert_eq!(route.link, "net1");
        assert_eq!(route.dst, "10.100.0.0/16");
        assert_eq!(route.gateway.as_deref(), Some("192.168.1.254"));
        assert_eq!(plan.cni_result.unwrap().routes[0].dst, "10.100.0.0/16");
    }

    #[test]
    fn add_without_a_previous_plugin_is_a_config_error() {
        let error =
            FixedRoute::handle(&MockHost::new(), request(Command::Add, CONFIG)).unwrap_err();
        assert_eq!(error.code, 7);
    }

    #[test]
    fn check_finds_a_missing_route() {
        let error =
            FixedRoute::handle(&MockHost::new(), request(Command::Check, CONFIG)).unwrap_err();
        assert!(error.msg.contains("10.100.0.0/16"), "{}", error.msg);
    }

    #[test]
    fn the_plan_passes_the_hosts_policy_and_check_sees_the_route() {
        // The pod's net1, as the previous plugin of the conflist left it.
        let host = MockHost::new().with_link(Netns::Sandbox, "net1", 1500);
        let mut add = request(Command::Add, CONFIG);
        add.prev_result = Some(CniResult::empty());
        let plan = FixedRoute::handle(&host, add.clone()).unwrap();
        // The host's own policy, then the ops on the in-memory links.
        host.apply(&add, &plan).unwrap();
        let mut check = request(Command::Check, CONFIG);
        check.prev_result = plan.cni_result;
        FixedRoute::handle(&host, check).unwrap();
    }
}

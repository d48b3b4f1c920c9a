//! Whether a plan's underlay addresses are free on this host: a second run on the same base,
//! or a base inside a network the host already has, would give two bridges one gateway (the
//! second run then hangs with no word of why).

use std::net::Ipv4Addr;

use crate::plan::UnderlayPlan;

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "underlay {first}..{last} holds {addr} of {ifname}, which belongs to prefix {prefix}'s earlier run (crashed?): `nextmini cleanup --prefix {prefix}` removes it"
    )]
    Leftover {
        first: Ipv4Addr,
        last: Ipv4Addr,
        addr: Ipv4Addr,
        ifname: String,
        prefix: String,
    },
    #[error(
        "underlay {first}..{last} overlaps {addr} on {ifname} (another run or a network of this host): choose another --base (or underlay_base)"
    )]
    Taken {
        first: Ipv4Addr,
        last: Ipv4Addr,
        addr: Ipv4Addr,
        ifname: String,
    },
    #[error("cannot list this host's addresses: {0}")]
    List(#[from] nix::Error),
}

/// Fails when an interface of this network namespace has an address in the plan's range.
pub fn check_free(plan: &UnderlayPlan) -> Result<(), AddressError> {
    let (first, last) = plan.range();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        if addr < first || addr > last {
            continue;
        }
        if plan.prefix().classify(&ifa.interface_name).is_some() {
            return Err(AddressError::Leftover {
                first,
                last,
                addr,
                ifname: ifa.interface_name,
                prefix: plan.prefix().as_str().to_owned(),
            });
        }
        return Err(AddressError::Taken {
            first,
            last,
            addr,
            ifname: ifa.interface_name,
        });
    }
    Ok(())
}

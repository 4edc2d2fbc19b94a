//! The vocabulary the admin API, the `oi` CLI and the coordinator share:
//! cluster specs ([`model`]), views and errors ([`views`]), their wire
//! conversions ([`convert`]), join token strings ([`token`]), the admin
//! credentials file ([`admin_conf`]) and the CA pin ([`cert`]). No I/O
//! beyond reading and writing `admin.conf`; no server, no agent.

pub mod admin_conf;
pub mod cert;
pub mod convert;
pub mod model;
pub mod node_network;
pub mod token;
pub mod views;

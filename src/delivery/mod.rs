//! Delivery (DESIGN §5), being built: route selection and the classification of results.
//! The SMTP client, the resolver and DSNs come next; nothing here sends mail yet.

pub mod client;
pub mod outcome;
pub mod route;

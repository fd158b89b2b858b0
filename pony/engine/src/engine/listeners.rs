//! [`Listeners`]: which app accepts the flows peers open to each service.
//!
//! One listener per service: a second `Listen` on a held service, by any app including the
//! holder, is refused (a second cookie for one service would leave which of them gets the
//! flows undefined). Only the holder can give a service back; a detached app's services
//! are freed.

use std::collections::HashMap;

use pony_express::app::{Cookie, ServiceId};

/// Service → (session, its Listen's cookie).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Listeners {
    by_service: HashMap<ServiceId, (u64, Cookie)>,
}

impl Listeners {
    /// Gives `service` to session `sid`, whose Listen had `cookie`; false if it is taken.
    pub(super) fn listen(&mut self, service: ServiceId, sid: u64, cookie: Cookie) -> bool {
        if self.by_service.contains_key(&service) {
            return false;
        }
        self.by_service.insert(service, (sid, cookie));
        true
    }

    /// Gives `service` back; false if session `sid` does not hold it.
    pub(super) fn unlisten(&mut self, service: ServiceId, sid: u64) -> bool {
        match self.by_service.get(&service) {
            Some(&(holder, _)) if holder == sid => {
                self.by_service.remove(&service);
                true
            }
            _ => false,
        }
    }

    /// Who accepts flows opened to `service`: (session, Listen cookie).
    pub(super) fn get(&self, service: ServiceId) -> Option<(u64, Cookie)> {
        self.by_service.get(&service).copied()
    }

    /// Frees every service session `sid` holds.
    pub(super) fn remove_session(&mut self, sid: u64) {
        self.by_service.retain(|_, (s, _)| *s != sid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_service() {
        let mut l = Listeners::default();
        assert!(l.listen(7, 1, 10));
        assert!(!l.listen(7, 1, 11), "not even the holder twice");
        assert!(!l.listen(7, 2, 12));
        assert!(!l.unlisten(7, 2), "not the holder");
        assert_eq!(l.get(7), Some((1, 10)));
        assert!(l.unlisten(7, 1));
        assert!(l.listen(7, 2, 12) && l.listen(8, 2, 13) && l.listen(9, 3, 14));
        l.remove_session(2);
        assert_eq!((l.get(7), l.get(8), l.get(9)), (None, None, Some((3, 14))));
    }
}

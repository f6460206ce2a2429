//! A value a reload replaces while its readers carry on: a reader takes the current
//! `Arc` (a lock held only for a clone), a reload stores a new one, and whatever already
//! runs (an SMTP session, a delivery) keeps the one it took until it ends.

use std::sync::{Arc, RwLock};

pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: T) -> Current<T> {
        Current(RwLock::new(Arc::new(value)))
    }

    /// Starts with a value already shared.
    pub fn from_arc(value: Arc<T>) -> Current<T> {
        Current(RwLock::new(value))
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        self.0.read().expect("not poisoned").clone()
    }

    /// From now on, `value`.
    pub fn set(&self, value: Arc<T>) {
        *self.0.write().expect("not poisoned") = value;
    }
}

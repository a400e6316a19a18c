//! `#[verse::object]`: turns an `impl` block of async methods into a Verse object type.
//! (Implementation in progress on a branch.)

use proc_macro::TokenStream;

/// Turns an `impl` block into an object type (see the `verse` crate docs).
#[proc_macro_attribute]
pub fn object(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}

//! `#[verse::object]`: turns an inherent `impl` block of async methods into a Verse object type.
//!
//! The macro reads the block ([`model`]), then generates the `Object` implementation
//! ([`expand`]: type name, method table, constructor, dispatch as a boxed future, hooks and a
//! `Send` check per method) and the typed reference ([`reference`]). Generated code names only
//! paths under `<crate>::__private` (`::verse` unless `crate = …` says otherwise), so users need
//! no other dependency. Errors are reported at the user's spans, all of them in one pass.

use proc_macro::TokenStream;
use quote::quote;

mod args;
mod expand;
mod model;
mod reference;
mod signature;

/// Turns an inherent `impl` block into a Verse object type.
///
/// ```text
/// #[verse::object]                      // or (name = "Counter", crate = ::verse, vis = pub(crate))
/// impl Counter {
///     // A method: wire name `Increment` (PascalCase of the fn name).
///     async fn increment(&mut self, ctx: &CallContext, req: Add) -> Result<Total, MethodError> { … }
///
///     #[method(name = "Get")]           // wire name override
///     #[idempotent]                     // safe to resend after an unknown outcome
///     async fn get_total(&mut self, ctx: &CallContext, req: Empty) -> Result<Total, String> { … }
///
///     #[on_activate]   async fn up(&mut self, ctx: &CallContext) -> Result<(), MethodError> { … }
///     #[on_deactivate] async fn down(&mut self, ctx: &CallContext) -> Result<(), MethodError> { … }
///     #[snapshot] fn save(&self) -> CounterState { … }          // with #[restore]: persistent
///     #[restore]  fn load(&mut self, state: CounterState) { … }
///     #[init]     fn new(id: &str) -> Self { … }                 // default: Default::default()
///
///     fn helper(&self) {}                // other fns are left alone
/// }
/// ```
///
/// `descriptors = EXPR` (a `&'static [u8]`, usually `include_bytes!` of the set `prost-build`
/// writes with `file_descriptor_set_path`) registers the serialized `FileDescriptorSet` of the
/// type's messages, so the gateway can call its methods with protobuf JSON.
///
/// Generates `impl Object for Counter` and `pub struct CounterRef` with `id()`, `raw()`,
/// `increment(req)` (awaits the response) and `send_increment(req)` (one way) per method.
#[proc_macro_attribute]
pub fn object(args: TokenStream, input: TokenStream) -> TokenStream {
    expand_object(args.into(), input.into()).into()
}

fn expand_object(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut item = match syn::parse2::<syn::ItemImpl>(input.clone()) {
        Ok(item) => item,
        Err(error) => {
            // Another kind of item gets a plain explanation; an impl block that does not parse
            // gets the parser's error.
            let error = match syn::parse2::<syn::Item>(input.clone()) {
                Ok(other) if !matches!(other, syn::Item::Impl(_)) => syn::Error::new_spanned(
                    other,
                    "`#[verse::object]` goes on an inherent impl block (`impl Type { … }`)",
                ),
                _ => error,
            };
            let error = error.to_compile_error();
            return quote!(#input #error);
        }
    };
    let args = args::ObjectArgs::parse(args);
    // Reading the model strips the marker attributes, so `item` is emitted as is on errors too.
    let model = model::ObjectModel::read(&mut item);
    match (args, model) {
        (Ok(args), Ok(model)) => {
            let ref_ident = reference::ref_ident(&model);
            let object_impl = expand::object_impl(&args, &model, &ref_ident);
            let typed_ref = reference::typed_ref(&args, &model, &ref_ident);
            quote! {
                #item
                #object_impl
                #typed_ref
            }
        }
        (args, model) => {
            let mut errors = model::Errors::default();
            for error in [args.err(), model.err()].into_iter().flatten() {
                errors.push(error);
            }
            let errors = errors.finish(()).err().map(|e| e.to_compile_error());
            quote! {
                #item
                #errors
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::expand_object;

    fn counter() -> proc_macro2::TokenStream {
        quote! {
            impl Counter {
                /// Adds.
                #[idempotent]
                async fn add_one(&mut self, ctx: &CallContext, req: Add) -> Result<Total, E> {
                    Ok(Total::default())
                }
                #[method(name = "Get")]
                async fn get(&mut self, ctx: &CallContext, req: Empty) -> Result<Total, E> {
                    Ok(Total::default())
                }
                #[snapshot]
                fn save(&self) -> State { State::default() }
                #[restore]
                fn load(&mut self, state: State) {}
                fn helper(&self) {}
            }
        }
    }

    /// Every path into the runtime goes through `<crate>::__private` (users depend only on the
    /// facade, and `crate = …` must redirect all of them).
    #[test]
    fn generated_code_names_only_private_paths() {
        let output = expand_object(quote!(crate = ::my_facade), counter()).to_string();
        assert!(!output.contains("compile_error"), "{output}");
        assert!(!output.contains(":: verse"), "{output}");
        let uses = output.matches(":: my_facade ::").count();
        assert!(uses > 10, "{output}");
        assert_eq!(output.matches(":: my_facade :: __private ::").count(), uses, "{output}");
    }

    #[test]
    fn markers_are_stripped_and_helpers_kept() {
        let output = expand_object(quote!(), counter()).to_string();
        for marker in ["# [idempotent]", "# [method", "# [snapshot]", "# [restore]"] {
            assert!(!output.contains(marker), "{marker} left in {output}");
        }
        assert!(output.contains("fn helper (& self)"), "{output}");
        assert!(output.contains("name : \"AddOne\""), "{output}");
        assert!(output.contains("name : \"Get\""), "{output}");
        assert!(output.contains("pub struct CounterRef"), "{output}");
        assert!(output.contains("pub fn send_add_one"), "{output}");
        assert!(output.contains("const HAS_STATE : bool = true"), "{output}");
    }

    #[test]
    fn errors_keep_the_block_without_markers() {
        let input = quote! {
            impl Broken {
                #[idempotent]
                async fn read(&self, ctx: &CallContext, req: Empty) -> Result<Empty, E> { Ok(req) }
            }
        };
        let output = expand_object(quote!(), input).to_string();
        assert!(output.contains("compile_error"), "{output}");
        assert!(output.contains("async fn read"), "{output}");
        assert!(!output.contains("# [idempotent]"), "{output}");
        assert!(!output.contains("impl :: verse :: __private :: Object"), "{output}");
    }
}

//! Shape checks of fn signatures (receiver, parameters, return type) shared by methods and
//! hooks, each reporting at the offending tokens.

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, PatType, PathArguments, ReturnType, Signature, Type};

use crate::model::Errors;

/// Rejects generic, `unsafe`, `const` and foreign-ABI fns, which generated code cannot call.
pub(crate) fn check_plain(sig: &Signature, what: &str, errors: &mut Errors) {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(&sig.generics, format!("{what} cannot be generic")));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(token, format!("{what} cannot be `unsafe`")));
    }
    if let Some(token) = &sig.constness {
        errors.push(syn::Error::new_spanned(token, format!("{what} cannot be `const`")));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(abi, format!("{what} cannot have an ABI")));
    }
}

pub(crate) fn check_sync(sig: &Signature, shape: &str, errors: &mut Errors) {
    if let Some(token) = &sig.asyncness {
        errors.push(syn::Error::new_spanned(token, shape));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// `&mut self`.
    Mutable,
    /// `&self`.
    Shared,
}

pub(crate) fn check_receiver(sig: &Signature, expected: Receiver, what: &str, errors: &mut Errors) {
    let wanted = match expected {
        Receiver::Mutable => "&mut self",
        Receiver::Shared => "&self",
    };
    let Some(receiver) = sig.receiver() else {
        errors.push(syn::Error::new_spanned(
            &sig.ident,
            format!("{what} take `{wanted}` as their first parameter"),
        ));
        return;
    };
    let found = match &*receiver.ty {
        Type::Reference(reference) if reference.mutability.is_some() => Some(Receiver::Mutable),
        Type::Reference(_) => Some(Receiver::Shared),
        _ => None,
    };
    if found != Some(expected) {
        let why = match expected {
            Receiver::Mutable => ": a turn has exclusive access to the object",
            Receiver::Shared => "",
        };
        errors.push(syn::Error::new_spanned(receiver, format!("{what} take `{wanted}`{why}")));
    }
}

/// Whether `ctx` looks like the context parameter (a shared reference); reports it if not.
pub(crate) fn check_context(ctx: &PatType, errors: &mut Errors) -> bool {
    let is_shared_ref = matches!(&*ctx.ty, Type::Reference(r) if r.mutability.is_none());
    if !is_shared_ref {
        errors.push(syn::Error::new_spanned(
            &ctx.ty,
            "expected the context parameter here: `ctx: &CallContext`",
        ));
    }
    is_shared_ref
}

/// Message types are repeated outside the impl block (in the reference and the `Send` check),
/// where `Self` would name something else.
pub(crate) fn check_no_self(ty: &Type, errors: &mut Errors) {
    fn mentions_self(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(ident) => ident == "Self",
            proc_macro2::TokenTree::Group(group) => mentions_self(group.stream()),
            _ => false,
        })
    }
    if mentions_self(quote::quote!(#ty)) {
        errors.push(syn::Error::new_spanned(
            ty,
            "request and response types cannot mention `Self`; name the type",
        ));
    }
}

pub(crate) fn typed_args(sig: &Signature) -> Vec<&PatType> {
    sig.inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// The parameter list for error spans (the fn name when the list is empty).
pub(crate) fn args_span(sig: &Signature) -> proc_macro2::TokenStream {
    let inputs = &sig.inputs;
    if inputs.is_empty() { quote::quote!(#sig) } else { quote::quote!(#inputs) }
}

pub(crate) fn return_span(sig: &Signature) -> proc_macro2::TokenStream {
    match &sig.output {
        ReturnType::Type(_, ty) => quote::quote!(#ty),
        ReturnType::Default => quote::quote!(#sig),
    }
}

/// `Result<Ok, Err>` (any path ending in `Result` with two type arguments).
pub(crate) fn result_types(output: &ReturnType) -> syn::Result<(Type, Type)> {
    let message = "expected a `Result<Response, E>` return type (E: Into<CallError>, e.g. \
                   MethodError, String or CallError)";
    let ReturnType::Type(_, ty) = output else {
        return Err(syn::Error::new(output.span(), message));
    };
    let last = match &**ty {
        Type::Path(path) => path.path.segments.last(),
        _ => None,
    };
    let generic = match last {
        Some(last) if last.ident == "Result" => match &last.arguments {
            PathArguments::AngleBracketed(generic) => Some(generic),
            _ => None,
        },
        _ => None,
    };
    let args: Vec<&GenericArgument> = generic.map(|g| g.args.iter().collect()).unwrap_or_default();
    match args.as_slice() {
        [GenericArgument::Type(ok), GenericArgument::Type(err)] => Ok((ok.clone(), err.clone())),
        _ => Err(syn::Error::new_spanned(ty, message)),
    }
}

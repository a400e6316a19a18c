//! Reads the annotated `impl` block into an [`ObjectModel`]: its methods (wire names, request
//! and response types) and hooks, after checking every signature.
//!
//! Marker attributes (`#[method]`, `#[idempotent]`, `#[on_activate]`, …) are stripped from the
//! block in place, so the block can be emitted unchanged even when the model has errors (the
//! user then sees only the macro's errors, not "cannot find attribute" ones).

use std::collections::HashMap;

use heck::ToUpperCamelCase;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Attribute, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, ReturnType, Signature, Type};

use crate::signature::{
    Receiver, args_span, check_context, check_no_self, check_plain, check_receiver, check_sync,
    result_types, return_span, typed_args,
};

/// One method of the object type.
pub(crate) struct Method {
    /// The Rust name of the inherent `async fn`.
    pub(crate) ident: Ident,
    /// The wire name (`GetState` for `get_state` unless overridden).
    pub(crate) wire_name: String,
    /// Where the wire name comes from (the override literal or the fn name).
    pub(crate) wire_span: Span,
    /// `#[idempotent]`.
    pub(crate) idempotent: bool,
    /// The request message type.
    pub(crate) request: Type,
    /// The `Ok` type of the returned `Result`.
    pub(crate) response: Type,
    /// The method's own doc attributes, repeated on the reference's methods.
    pub(crate) docs: Vec<Attribute>,
}

/// The optional hooks, each the name of the inherent fn that implements it.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_activate: Option<Ident>,
    pub(crate) on_deactivate: Option<Ident>,
    /// The snapshot fn and the state message type it returns.
    pub(crate) snapshot: Option<(Ident, Type)>,
    pub(crate) restore: Option<Ident>,
    pub(crate) init: Option<Ident>,
}

/// Everything code generation needs about the object type.
pub(crate) struct ObjectModel {
    /// The implementing type as written (`Counter`).
    pub(crate) self_ty: Type,
    /// The last segment of its path (the default type name; names the reference).
    pub(crate) struct_ident: Ident,
    pub(crate) methods: Vec<Method>,
    pub(crate) hooks: Hooks,
}

/// Collects errors so that one expansion reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

const METHOD_SHAPE: &str =
    "a method is `async fn name(&mut self, ctx: &CallContext, request: Req) -> Result<Resp, E>`";

/// The hook markers an `impl` item can carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    OnActivate,
    OnDeactivate,
    Snapshot,
    Restore,
    Init,
}

impl Marker {
    const ALL: [(Marker, &'static str); 5] = [
        (Marker::OnActivate, "on_activate"),
        (Marker::OnDeactivate, "on_deactivate"),
        (Marker::Snapshot, "snapshot"),
        (Marker::Restore, "restore"),
        (Marker::Init, "init"),
    ];

    fn name(self) -> &'static str {
        Marker::ALL.iter().find(|(m, _)| *m == self).map_or("", |(_, name)| name)
    }

    fn of(attr: &Attribute) -> Option<Marker> {
        Marker::ALL.iter().find(|(_, name)| attr.path().is_ident(name)).map(|(m, _)| *m)
    }
}

/// The markers found on one fn, removed from its attributes.
#[derive(Default)]
struct FnMarkers {
    hook: Option<(Marker, Attribute)>,
    wire_name: Option<LitStr>,
    idempotent: Option<Attribute>,
    method_attr: Option<Attribute>,
}

impl ObjectModel {
    /// Checks the block and reads its model, stripping marker attributes from `item` in place.
    pub(crate) fn read(item: &mut ItemImpl) -> syn::Result<ObjectModel> {
        let mut errors = Errors::default();
        check_block(item, &mut errors);
        let struct_ident = match struct_ident(&item.self_ty) {
            Ok(ident) => Some(ident),
            Err(error) => {
                errors.push(error);
                None
            }
        };
        let mut methods = Vec::new();
        let mut hooks = Hooks::default();
        for impl_item in &mut item.items {
            let ImplItem::Fn(function) = impl_item else {
                continue;
            };
            let markers = take_markers(function, &mut errors);
            read_fn(function, markers, &mut methods, &mut hooks, &mut errors);
        }
        check_state_pair(&hooks, &mut errors);
        check_wire_names(&methods, &mut errors);
        if let Some(ident) = &struct_ident {
            check_reference_names(ident, &methods, &mut errors);
        }
        let model = struct_ident.map(|struct_ident| ObjectModel {
            self_ty: (*item.self_ty).clone(),
            struct_ident,
            methods,
            hooks,
        });
        // `struct_ident` is `None` only when an error was pushed, so `finish` fails first.
        errors.finish(model)?.ok_or_else(|| syn::Error::new(Span::call_site(), "invalid type"))
    }
}

fn check_block(item: &ItemImpl, errors: &mut Errors) {
    if let Some((bang, path, for_token)) = &item.trait_ {
        let message = "`#[verse::object]` goes on an inherent impl block (`impl Type { … }`), \
                       not on a trait impl";
        errors.push(syn::Error::new_spanned(quote::quote!(#bang #path #for_token), message));
    }
    if !item.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &item.generics,
            "object types cannot be generic: the runtime names a type by one fixed type name",
        ));
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "object impl blocks cannot have a where clause",
        ));
    }
}

fn struct_ident(self_ty: &Type) -> syn::Result<Ident> {
    if let Type::Path(path) = self_ty
        && path.qself.is_none()
        && let Some(last) = path.path.segments.last()
    {
        return Ok(last.ident.clone());
    }
    Err(syn::Error::new_spanned(self_ty, "expected the object's struct type, e.g. `impl Counter`"))
}

/// Removes the macro's marker attributes from `function`, returning what they said.
fn take_markers(function: &mut ImplItemFn, errors: &mut Errors) -> FnMarkers {
    let mut markers = FnMarkers::default();
    function.attrs.retain(|attr| {
        if let Some(marker) = Marker::of(attr) {
            if let Err(error) = attr.meta.require_path_only() {
                errors.push(error);
            }
            match markers.hook {
                Some((first, _)) => errors.push(syn::Error::new_spanned(
                    attr,
                    format!("this fn is already marked `#[{}]`", first.name()),
                )),
                None => markers.hook = Some((marker, attr.clone())),
            }
            false
        } else if attr.path().is_ident("idempotent") {
            if let Err(error) = attr.meta.require_path_only() {
                errors.push(error);
            }
            markers.idempotent = Some(attr.clone());
            false
        } else if attr.path().is_ident("method") {
            markers.method_attr = Some(attr.clone());
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let name: LitStr = meta.value()?.parse()?;
                    if name.value().is_empty() {
                        return Err(syn::Error::new_spanned(&name, "wire names cannot be empty"));
                    }
                    markers.wire_name = Some(name);
                    Ok(())
                } else {
                    Err(meta.error("unknown method option; expected `name = \"WireName\"`"))
                }
            });
            if let Err(error) = parsed {
                errors.push(error);
            }
            false
        } else {
            true
        }
    });
    markers
}

fn read_fn(
    function: &ImplItemFn,
    markers: FnMarkers,
    methods: &mut Vec<Method>,
    hooks: &mut Hooks,
    errors: &mut Errors,
) {
    let sig = &function.sig;
    if let Some((marker, attr)) = markers.hook {
        for extra in [markers.method_attr, markers.idempotent].into_iter().flatten() {
            errors.push(syn::Error::new_spanned(
                extra,
                format!("`#[{}]` marks a hook, which is not a method", marker.name()),
            ));
        }
        read_hook(sig, marker, &attr, hooks, errors);
    } else if sig.asyncness.is_some() {
        if let Some(method) = read_method(function, markers, errors) {
            methods.push(method);
        }
    } else if let Some(attr) = markers.method_attr.or(markers.idempotent) {
        errors.push(syn::Error::new_spanned(attr, format!("{METHOD_SHAPE}; this fn is not async")));
    }
}

fn read_method(function: &ImplItemFn, markers: FnMarkers, errors: &mut Errors) -> Option<Method> {
    let sig = &function.sig;
    check_plain(sig, "methods", errors);
    check_receiver(sig, Receiver::Mutable, "methods", errors);
    let args = typed_args(sig);
    let mut request = None;
    match args.as_slice() {
        [] | [_] => errors.push(syn::Error::new_spanned(
            args_span(sig),
            format!("missing the context parameter: {METHOD_SHAPE}"),
        )),
        [ctx, req, extra @ ..] => {
            // With the context misplaced, a by-reference request is that context: one error.
            if check_context(ctx, errors) && matches!(*req.ty, Type::Reference(_)) {
                errors.push(syn::Error::new_spanned(
                    &req.ty,
                    "the request message is taken by value, not by reference",
                ));
            }
            for arg in extra {
                errors
                    .push(syn::Error::new_spanned(arg, format!("extra parameter: {METHOD_SHAPE}")));
            }
            check_no_self(&req.ty, errors);
            request = Some((*req.ty).clone());
        }
    }
    let response = match result_types(&sig.output) {
        Ok((ok, _)) => {
            check_no_self(&ok, errors);
            Some(ok)
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let ident = sig.ident.clone();
    let (wire_name, wire_span) = match markers.wire_name {
        Some(name) => (name.value(), name.span()),
        None => (ident.unraw().to_string().to_upper_camel_case(), ident.span()),
    };
    let docs = function.attrs.iter().filter(|a| a.path().is_ident("doc")).cloned().collect();
    // A method with errors is still returned when its types are known, so that duplicate wire
    // names are reported in the same pass.
    Some(Method {
        ident,
        wire_name,
        wire_span,
        idempotent: markers.idempotent.is_some(),
        request: request?,
        response: response?,
        docs,
    })
}

fn read_hook(
    sig: &Signature,
    marker: Marker,
    attr: &Attribute,
    hooks: &mut Hooks,
    errors: &mut Errors,
) {
    let what = format!("`#[{}]` hooks", marker.name());
    check_plain(sig, &what, errors);
    let args = typed_args(sig);
    let slot = match marker {
        Marker::OnActivate | Marker::OnDeactivate => {
            let shape = format!(
                "{what} are `async fn {}(&mut self, ctx: &CallContext) -> Result<(), E>`",
                sig.ident
            );
            if sig.asyncness.is_none() {
                errors.push(syn::Error::new_spanned(sig.fn_token, &shape));
            }
            check_receiver(sig, Receiver::Mutable, &what, errors);
            match args.as_slice() {
                [ctx] => {
                    check_context(ctx, errors);
                }
                _ => errors.push(syn::Error::new_spanned(args_span(sig), &shape)),
            }
            match result_types(&sig.output) {
                Ok((Type::Tuple(unit), _)) if unit.elems.is_empty() => {}
                Ok((ok, _)) => errors.push(syn::Error::new_spanned(ok, &shape)),
                Err(_) => errors.push(syn::Error::new_spanned(return_span(sig), &shape)),
            }
            if marker == Marker::OnActivate {
                &mut hooks.on_activate
            } else {
                &mut hooks.on_deactivate
            }
        }
        Marker::Snapshot => {
            let shape = format!("{what} are `fn {}(&self) -> StateMessage`", sig.ident);
            check_sync(sig, &shape, errors);
            check_receiver(sig, Receiver::Shared, &what, errors);
            if !args.is_empty() {
                errors.push(syn::Error::new_spanned(args_span(sig), &shape));
            }
            match &sig.output {
                ReturnType::Type(_, ty) => {
                    if hooks.snapshot.is_none() {
                        hooks.snapshot = Some((sig.ident.clone(), (**ty).clone()));
                    } else {
                        errors.push(duplicate_hook(marker, attr));
                    }
                }
                ReturnType::Default => errors.push(syn::Error::new_spanned(sig, &shape)),
            }
            return;
        }
        Marker::Restore => {
            let shape = format!("{what} are `fn {}(&mut self, state: StateMessage)`", sig.ident);
            check_sync(sig, &shape, errors);
            check_receiver(sig, Receiver::Mutable, &what, errors);
            if args.len() != 1 {
                errors.push(syn::Error::new_spanned(args_span(sig), &shape));
            }
            &mut hooks.restore
        }
        Marker::Init => {
            let shape = format!("{what} are `fn {}(id: &str) -> Self`", sig.ident);
            check_sync(sig, &shape, errors);
            if let Some(receiver) = sig.receiver() {
                errors.push(syn::Error::new_spanned(receiver, &shape));
            }
            if args.len() != 1 || matches!(sig.output, ReturnType::Default) {
                errors.push(syn::Error::new_spanned(sig, &shape));
            }
            &mut hooks.init
        }
    };
    if slot.is_some() {
        errors.push(duplicate_hook(marker, attr));
    } else {
        *slot = Some(sig.ident.clone());
    }
}

fn duplicate_hook(marker: Marker, attr: &Attribute) -> syn::Error {
    syn::Error::new_spanned(
        attr,
        format!("a second `#[{}]` hook; a type has at most one", marker.name()),
    )
}

fn check_state_pair(hooks: &Hooks, errors: &mut Errors) {
    match (&hooks.snapshot, &hooks.restore) {
        (Some((snapshot, _)), None) => errors.push(syn::Error::new_spanned(
            snapshot,
            "`#[snapshot]` without `#[restore]`: a type with state declares both",
        )),
        (None, Some(restore)) => errors.push(syn::Error::new_spanned(
            restore,
            "`#[restore]` without `#[snapshot]`: a type with state declares both",
        )),
        _ => {}
    }
}

fn check_wire_names(methods: &[Method], errors: &mut Errors) {
    let mut seen: HashMap<&str, &Ident> = HashMap::new();
    for method in methods {
        if let Some(first) = seen.insert(&method.wire_name, &method.ident) {
            errors.push(syn::Error::new(
                method.wire_span,
                format!(
                    "duplicate wire name `{}`: method `{first}` already uses it; rename one \
                     with `#[method(name = \"…\")]`",
                    method.wire_name
                ),
            ));
        }
    }
}

/// The typed reference gets `id`, `raw`, and per method `name` and `send_name`: these must not
/// collide.
fn check_reference_names(struct_ident: &Ident, methods: &[Method], errors: &mut Errors) {
    let mut taken: HashMap<String, String> =
        ["id", "raw"].into_iter().map(|n| (n.to_owned(), "the accessor".to_owned())).collect();
    for method in methods {
        let name = method.ident.unraw().to_string();
        for generated in [name.clone(), format!("send_{name}")] {
            if let Some(owner) = taken.insert(generated.clone(), format!("method `{name}`")) {
                errors.push(syn::Error::new_spanned(
                    &method.ident,
                    format!(
                        "`{struct_ident}Ref::{generated}` would be generated twice (also for \
                         {owner}); rename this method and keep its wire name with \
                         `#[method(name = \"…\")]`"
                    ),
                ));
            }
        }
    }
}

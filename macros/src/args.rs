//! The attribute's own arguments:
//! `#[verse::object(name = "…", crate = path, vis = …, descriptors = EXPR)]`.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::{Expr, LitStr, Path, Visibility};

/// Parsed attribute arguments; every one is optional.
pub(crate) struct ObjectArgs {
    /// `name = "Counter"`: the object type name (default: the struct's name).
    pub(crate) type_name: Option<LitStr>,
    /// `crate = path`: the path of the facade (default `::verse`). Generated code names only
    /// `#krate::__private::…`.
    pub(crate) krate: Path,
    /// `vis = pub(crate)`: visibility of the generated reference (default `pub`).
    pub(crate) vis: Visibility,
    /// `descriptors = EXPR`: a `&'static [u8]` holding the serialized `FileDescriptorSet` of
    /// the type's messages (for the gateway's JSON transcoding).
    pub(crate) descriptors: Option<Expr>,
}

impl ObjectArgs {
    /// Parses the argument list, reporting every bad argument at its span.
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut type_name = None;
        let mut krate = None;
        let mut vis = None;
        let mut descriptors = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                let name: LitStr = meta.value()?.parse()?;
                if name.value().is_empty() {
                    return Err(syn::Error::new_spanned(&name, "the type name cannot be empty"));
                }
                set_once(&mut type_name, name, &meta)
            } else if meta.path.is_ident("crate") {
                set_once(&mut krate, meta.value()?.parse::<Path>()?, &meta)
            } else if meta.path.is_ident("vis") {
                set_once(&mut vis, meta.value()?.parse::<Visibility>()?, &meta)
            } else if meta.path.is_ident("descriptors") {
                set_once(&mut descriptors, meta.value()?.parse::<Expr>()?, &meta)
            } else {
                Err(meta.error(
                    "unknown argument; expected `name = \"TypeName\"`, `crate = path`, `vis = …` \
                     or `descriptors = EXPR`",
                ))
            }
        });
        parser.parse2(args)?;
        Ok(ObjectArgs {
            type_name,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::verse)),
            vis: vis.unwrap_or_else(|| syn::parse_quote!(pub)),
            descriptors,
        })
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &syn::meta::ParseNestedMeta,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error("argument given twice"));
    }
    *slot = Some(value);
    Ok(())
}

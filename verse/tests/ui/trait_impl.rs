#[derive(Default)]
struct Plain;

trait Named {
    fn name(&self) -> &'static str;
}

#[verse::object]
impl Named for Plain {
    fn name(&self) -> &'static str {
        "plain"
    }
}

fn main() {}

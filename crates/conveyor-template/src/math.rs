//! `$.math(…)`: arithmetic over numbers, after templates in it were rendered.
//!
//! `+ - * / %`, parentheses, unary minus, and `round floor ceil abs sqrt` of one
//! argument. Numbers are 64-bit floats; a whole result within 2^53 becomes an integer.

const MAX_DEPTH: usize = 64;

pub(crate) fn eval(text: &str) -> Result<f64, String> {
    let mut parser = MathParser {
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    parser.skip_spaces();
    if parser.pos == parser.bytes.len() {
        return Err("empty expression".into());
    }
    let value = parser.sum()?;
    parser.skip_spaces();
    if parser.pos < parser.bytes.len() {
        return Err(format!(
            "unexpected `{}` in `{text}`",
            String::from_utf8_lossy(&parser.bytes[parser.pos..])
                .chars()
                .next()
                .unwrap_or('?')
        ));
    }
    if !value.is_finite() {
        return Err(format!("`{text}` is not a finite number"));
    }
    Ok(value)
}

struct MathParser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl MathParser<'_> {
    fn skip_spaces(&mut self) {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_spaces();
        self.bytes.get(self.pos).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        loop {
            match self.peek() {
                Some(b'+') => {
                    self.pos += 1;
                    value += self.product()?;
                }
                Some(b'-') => {
                    self.pos += 1;
                    value -= self.product()?;
                }
                _ => return Ok(value),
            }
        }
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.unary()?;
        loop {
            match self.peek() {
                Some(b'*') => {
                    self.pos += 1;
                    value *= self.unary()?;
                }
                Some(op @ (b'/' | b'%')) => {
                    self.pos += 1;
                    let divisor = self.unary()?;
                    if divisor == 0.0 {
                        return Err("division by zero".into());
                    }
                    value = if op == b'/' {
                        value / divisor
                    } else {
                        value % divisor
                    };
                }
                _ => return Ok(value),
            }
        }
    }

    fn unary(&mut self) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nested more than {MAX_DEPTH} deep"));
        }
        let value = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                -self.unary()?
            }
            Some(b'+') => {
                self.pos += 1;
                self.unary()?
            }
            _ => self.atom()?,
        };
        self.depth -= 1;
        Ok(value)
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let value = self.sum()?;
                if self.peek() != Some(b')') {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_alphabetic() {
                    self.pos += 1;
                }
                let name = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
                let function: fn(f64) -> f64 = match name.as_str() {
                    "round" => f64::round,
                    "floor" => f64::floor,
                    "ceil" => f64::ceil,
                    "abs" => f64::abs,
                    "sqrt" => f64::sqrt,
                    _ => return Err(format!("unknown name `{name}`")),
                };
                if self.peek() != Some(b'(') {
                    return Err(format!("expected `(` after `{name}`"));
                }
                let argument = self.atom()?;
                Ok(function(argument))
            }
            Some(_) => {
                let rest = String::from_utf8_lossy(&self.bytes[self.pos..]);
                Err(format!(
                    "unexpected `{}`",
                    rest.chars().next().unwrap_or('?')
                ))
            }
            None => Err("unexpected end of expression".into()),
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        let start = self.pos;
        while self.pos < self.bytes.len()
            && (self.bytes[self.pos].is_ascii_digit() || self.bytes[self.pos] == b'.')
        {
            self.pos += 1;
        }
        if self.pos < self.bytes.len() && matches!(self.bytes[self.pos], b'e' | b'E') {
            let save = self.pos;
            self.pos += 1;
            if self.pos < self.bytes.len() && matches!(self.bytes[self.pos], b'+' | b'-') {
                self.pos += 1;
            }
            let digits = self.pos;
            while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
            if self.pos == digits {
                self.pos = save;
            }
        }
        let text = String::from_utf8_lossy(&self.bytes[start..self.pos]);
        text.parse::<f64>()
            .map_err(|_| format!("`{text}` is not a number"))
    }
}

#[cfg(test)]
mod tests {
    use super::eval;

    #[test]
    fn precedence_and_parentheses() {
        assert_eq!(eval("1 + 2 * 3"), Ok(7.0));
        assert_eq!(eval("(1 + 2) * 3"), Ok(9.0));
        assert_eq!(eval("-2 * -3"), Ok(6.0));
        assert_eq!(eval("7 % 4"), Ok(3.0));
        assert_eq!(eval("10 / 4"), Ok(2.5));
        assert_eq!(
            eval("round(2.5) + floor(1.9) + ceil(0.1) + abs(-1)"),
            Ok(6.0)
        );
        assert_eq!(eval("1e3 + 0.5"), Ok(1000.5));
    }

    #[test]
    fn errors() {
        assert_eq!(eval("1 / 0"), Err("division by zero".into()));
        assert!(eval("").is_err());
        assert!(eval("1 +").is_err());
        assert!(eval("(1").is_err());
        assert!(eval("2 3").is_err());
        assert!(eval("foo(1)").is_err());
        assert!(eval(&"(".repeat(10_000)).is_err());
    }
}

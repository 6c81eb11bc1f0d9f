import unittest

import app


class GreetTest(unittest.TestCase):
    def test_greet(self) -> None:
        self.assertIn("hello you", app.greet("you"))


if __name__ == "__main__":
    unittest.main()

"""A demo topic for the offline agent, used by tests and the benchmark (and a model for DB topics)."""

from __future__ import annotations

from .script import FAQ, Script

RESTAURANT = Script(
    slug="restaurant",
    title="Restaurant booking",
    persona="You are the friendly host of Luigi's, a small Italian restaurant. You take table bookings.",
    greeting="Hello, this is Luigi's. How can I help you today?",
    faq=(
        FAQ(
            "What are your opening hours?",
            "We are open from noon until ten in the evening, every day except Monday.",
            ("open", "opening", "hours", "close", "time"),
        ),
        FAQ(
            "Can I book a table?",
            "Of course. For how many people, and at what time would you like the table?",
            ("book", "booking", "reserve", "reservation", "table"),
        ),
        FAQ(
            "Do you have vegetarian options?",
            "Yes, about half of our menu is vegetarian, and we have two vegan pasta dishes.",
            ("vegetarian", "vegan", "meat", "menu"),
        ),
        FAQ(
            "Where are you located?",
            "We are at twelve Market Street, next to the old cinema.",
            ("where", "address", "located", "location", "street"),
        ),
        FAQ(
            "Is there parking nearby?",
            "There is a public car park behind the restaurant, free after six.",
            ("parking", "park", "car"),
        ),
        FAQ(
            "Can I cancel my booking?",
            "Yes, just tell me the name on the booking and I will cancel it.",
            ("cancel", "cancellation"),
        ),
        FAQ(
            "Do you take card payments?",
            "We take all major cards and contactless payments.",
            ("card", "pay", "payment", "cash"),
        ),
        FAQ(
            "Do you have a children's menu?",
            "Yes, we have a children's menu and high chairs.",
            ("children", "kids", "child", "high chair"),
        ),
    ),
    phrases=(
        "I would like to book a table for two",
        "I would like to book a table for four people",
        "can I make a reservation for tonight",
        "a table for two at eight o'clock please",
        "what time do you open on sunday",
        "are you open on monday",
        "do you have vegetarian options",
        "is there parking near the restaurant",
        "where is the restaurant",
        "I want to cancel my booking",
        "can I pay by card",
        "do you have a menu for children",
        "my name is john smith",
        "tomorrow evening at seven",
        "that's all thank you",
    ),
)

# Sentences spoken in tests and the benchmark: every one is in the topic's phrases.
SENTENCES = (
    "I would like to book a table for two",
    "what time do you open on sunday",
    "do you have vegetarian options",
    "is there parking near the restaurant",
    "I want to cancel my booking",
    "can I pay by card",
    "where is the restaurant",
    "do you have a menu for children",
)

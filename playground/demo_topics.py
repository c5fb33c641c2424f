"""Demo topics: enough FAQ and phrases for the offline agent to hold a short conversation."""

TOPICS = [
    {
        "slug": "restaurant-booking",
        "title": "Restaurant booking",
        "description": "Book a table at Bella Vista, an Italian restaurant.",
        "persona": "You are Sofia, the friendly host of Bella Vista, an Italian restaurant. "
        "Help callers book a table, answer questions about opening hours, the menu and parking. "
        "Keep answers short: one or two sentences.",
        "greeting": "Hello, this is Bella Vista. How can I help you today?",
        "default_language": "en",
        "phrases": [
            "I would like to book a table for two",
            "can I book a table for four people tonight",
            "do you have a table for tomorrow evening",
            "what time do you open",
            "when do you close",
            "are you open on Sunday",
            "do you have vegetarian dishes",
            "do you have gluten free pasta",
            "is there parking near the restaurant",
            "where are you located",
            "can I cancel my booking",
            "I want to change my reservation",
            "how much is the set menu",
            "do you take credit cards",
            "thank you goodbye",
            "yes please",
            "no thank you",
        ],
        "faq": [
            {
                "question": "I would like to book a table",
                "keywords": ["book", "table", "reservation", "reserve"],
                "answer": "Of course. For how many people, and at what time?",
            },
            {
                "question": "What time do you open and close",
                "keywords": ["open", "close", "hours", "sunday"],
                "answer": "We are open every day from noon to eleven in the evening.",
            },
            {
                "question": "Do you have vegetarian or gluten free dishes",
                "keywords": ["vegetarian", "vegan", "gluten", "dishes", "menu"],
                "answer": "Yes, half of our menu is vegetarian, and we have gluten free pasta.",
            },
            {
                "question": "Is there parking",
                "keywords": ["parking", "park", "car"],
                "answer": "There is free parking right behind the restaurant.",
            },
            {
                "question": "Where are you located",
                "keywords": ["where", "located", "address"],
                "answer": "We are at twelve Harbour Street, next to the old lighthouse.",
            },
            {
                "question": "Can I cancel or change my booking",
                "keywords": ["cancel", "change", "move"],
                "answer": "Sure, tell me the name on the booking and I will change it for you.",
            },
            {
                "question": "How much is the set menu",
                "keywords": ["much", "price", "cost", "set"],
                "answer": "The set menu is thirty five euros for three courses.",
            },
            {
                "question": "Do you take credit cards",
                "keywords": ["card", "cards", "pay", "cash"],
                "answer": "Yes, we take all major credit cards and cash.",
            },
            {
                "question": "Thank you goodbye",
                "keywords": ["thank", "thanks", "goodbye", "bye"],
                "answer": "You are welcome. We look forward to seeing you. Goodbye!",
            },
        ],
        "provider_options": {
            "liku": {"topic_id": "55", "face_id": "1", "liku_id": "33"},
            "aivoco": {"functions": ["check_availability", "current_time"]},
        },
    },
    {
        "slug": "clinic-reception",
        "title": "Clinic reception",
        "description": "Talk to the front desk of the Riverside family clinic.",
        "persona": "You are Sam, the receptionist at the Riverside family clinic. "
        "Help patients make appointments and answer practical questions. Never give medical advice.",
        "greeting": "Riverside clinic, this is Sam speaking. How can I help?",
        "default_language": "en",
        "phrases": [
            "I need to see a doctor",
            "can I make an appointment for tomorrow",
            "I would like an appointment with doctor Miller",
            "what are your opening hours",
            "do I need to bring my insurance card",
            "can I get a prescription renewed",
            "I need to cancel my appointment",
            "is there a pharmacy nearby",
            "how long is the waiting time",
            "do you do blood tests",
            "my child has a fever",
            "thank you goodbye",
        ],
        "faq": [
            {
                "question": "Can I make an appointment",
                "keywords": ["appointment", "see", "doctor", "book"],
                "answer": "Certainly. The next free appointment is tomorrow at nine thirty. Shall I book it?",
            },
            {
                "question": "What are your opening hours",
                "keywords": ["open", "hours", "close"],
                "answer": "The clinic is open Monday to Friday from eight to six.",
            },
            {
                "question": "Do I need my insurance card",
                "keywords": ["insurance", "card", "bring"],
                "answer": "Yes, please bring your insurance card and a photo ID.",
            },
            {
                "question": "Can I get a prescription renewed",
                "keywords": ["prescription", "renew", "medicine"],
                "answer": "Prescription renewals take two working days. I can pass a request to your doctor.",
            },
            {
                "question": "I need to cancel my appointment",
                "keywords": ["cancel", "change", "move"],
                "answer": "No problem. What is your name and date of birth?",
            },
            {
                "question": "Is there a pharmacy nearby",
                "keywords": ["pharmacy", "chemist"],
                "answer": "There is a pharmacy on the ground floor of our building.",
            },
            {
                "question": "Do you do blood tests",
                "keywords": ["blood", "test", "tests", "lab"],
                "answer": "Yes, blood tests are done every morning from eight to ten, no appointment needed.",
            },
            {
                "question": "My child has a fever",
                "keywords": ["fever", "child", "sick", "emergency"],
                "answer": "I cannot give medical advice, but I can book you the first slot today. "
                "In an emergency please call one one two.",
            },
            {
                "question": "Thank you goodbye",
                "keywords": ["thank", "thanks", "goodbye", "bye"],
                "answer": "Take care, goodbye!",
            },
        ],
        "provider_options": {"liku": {"topic_id": "56"}, "aivoco": {"functions": ["current_time"]}},
    },
    {
        "slug": "travel-help",
        "title": "Travel help",
        "description": "Ask a travel desk about trains, flights and hotels.",
        "persona": "You are Alex, a helpful travel desk agent at the central station. "
        "Answer questions about trains, the airport and hotels in a few words.",
        "greeting": "Hi, travel desk here. Where would you like to go?",
        "default_language": "en",
        "phrases": [
            "when is the next train to the airport",
            "how much is a ticket to the city centre",
            "where can I buy a ticket",
            "is there a hotel near the station",
            "how do I get to the airport",
            "which platform does the train leave from",
            "is my train delayed",
            "can I bring my bike on the train",
            "where is the left luggage office",
            "thank you goodbye",
        ],
        "faq": [
            {
                "question": "When is the next train to the airport",
                "keywords": ["train", "airport", "next"],
                "answer": "Trains to the airport leave every fifteen minutes from platform three.",
            },
            {
                "question": "How much is a ticket",
                "keywords": ["much", "ticket", "price", "cost"],
                "answer": "A single ticket to the city centre is two euros fifty.",
            },
            {
                "question": "Where can I buy a ticket",
                "keywords": ["buy", "where", "machine"],
                "answer": "You can buy tickets at the machines by the main entrance or in the app.",
            },
            {
                "question": "Is there a hotel near the station",
                "keywords": ["hotel", "stay", "room", "night"],
                "answer": "The Station Hotel is right across the square and usually has rooms.",
            },
            {
                "question": "Which platform",
                "keywords": ["platform", "leave", "departure"],
                "answer": "Check the departure boards; regional trains leave from platforms one to four.",
            },
            {
                "question": "Is my train delayed",
                "keywords": ["delayed", "late", "delay"],
                "answer": "All trains are running on time at the moment.",
            },
            {
                "question": "Can I bring my bike",
                "keywords": ["bike", "bicycle"],
                "answer": "Yes, bikes are allowed outside rush hour with a bike ticket.",
            },
            {
                "question": "Where is the left luggage office",
                "keywords": ["luggage", "bag", "bags", "locker"],
                "answer": "Left luggage lockers are next to platform one.",
            },
            {
                "question": "Thank you goodbye",
                "keywords": ["thank", "thanks", "goodbye", "bye"],
                "answer": "Have a good trip!",
            },
        ],
        "provider_options": {"liku": {"topic_id": "57"}},
    },
]

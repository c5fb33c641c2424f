"""Demo topics: enough FAQ and phrases for the offline agent to hold a short conversation.

Each topic is written in English (its default language), Spanish and French,
by hand. The translated FAQ keywords carry the English keywords too: speech
recognition is English only (pocketsphinx ships en-us), so a question spoken
in English still finds the answer, which the agent then gives in the chosen
language. Typed turns work in every language.
"""

RESTAURANT = {
    "es": {
        "greeting": "Hola, le atiende Bella Vista. ¿En qué puedo ayudarle?",
        "persona": "Eres Sofía, la amable anfitriona de Bella Vista, un restaurante italiano. "
        "Ayudas a reservar mesa y respondes preguntas sobre el horario, la carta y el aparcamiento. "
        "Responde siempre en español, con frases cortas: una o dos.",
        "fallback": "Perdone, no le he entendido. Puedo ayudarle con reservas, el horario, la carta "
        "o el aparcamiento.",
        "phrases": [
            "quisiera reservar una mesa para dos",
            "¿puedo reservar una mesa para cuatro personas esta noche?",
            "¿tienen mesa para mañana por la noche?",
            "¿a qué hora abren?",
            "¿a qué hora cierran?",
            "¿abren los domingos?",
            "¿tienen platos vegetarianos?",
            "¿tienen pasta sin gluten?",
            "¿hay aparcamiento cerca del restaurante?",
            "¿dónde están?",
            "quiero cancelar mi reserva",
            "quiero cambiar mi reserva",
            "¿cuánto cuesta el menú del día?",
            "¿aceptan tarjeta?",
            "gracias, adiós",
            "sí, por favor",
            "no, gracias",
        ],
        "faq": [
            {
                "question": "Quisiera reservar una mesa",
                "keywords": ["reservar", "reserva", "mesa", "book", "table", "reservation"],
                "answer": "Por supuesto. ¿Para cuántas personas y a qué hora?",
            },
            {
                "question": "¿A qué hora abren y cierran?",
                "keywords": [
                    "hora",
                    "horario",
                    "abren",
                    "abierto",
                    "cierran",
                    "domingo",
                    "open",
                    "close",
                    "hours",
                    "sunday",
                ],
                "answer": "Abrimos todos los días, de doce del mediodía a once de la noche.",
            },
            {
                "question": "¿Tienen platos vegetarianos o sin gluten?",
                "keywords": [
                    "vegetariano",
                    "vegetariana",
                    "vegano",
                    "gluten",
                    "platos",
                    "carta",
                    "vegetarian",
                    "vegan",
                    "dishes",
                ],
                "answer": "Sí, la mitad de la carta es vegetariana, y tenemos pasta sin gluten.",
            },
            {
                "question": "¿Hay aparcamiento?",
                "keywords": ["aparcamiento", "aparcar", "coche", "parking", "park", "car"],
                "answer": "Hay aparcamiento gratuito justo detrás del restaurante.",
            },
            {
                "question": "¿Dónde están?",
                "keywords": ["donde", "direccion", "situados", "where", "located", "address"],
                "answer": "Estamos en la calle del Puerto, número doce, junto al faro antiguo.",
            },
            {
                "question": "¿Puedo cancelar o cambiar mi reserva?",
                "keywords": ["cancelar", "anular", "cambiar", "mover", "cancel", "change", "move"],
                "answer": "Claro, dígame el nombre de la reserva y se la cambio.",
            },
            {
                "question": "¿Cuánto cuesta el menú del día?",
                "keywords": ["cuanto", "cuesta", "precio", "menu", "much", "price", "cost", "set"],
                "answer": "El menú del día cuesta treinta y cinco euros, con tres platos.",
            },
            {
                "question": "¿Aceptan tarjeta?",
                "keywords": ["tarjeta", "pagar", "efectivo", "card", "cards", "pay", "cash"],
                "answer": "Sí, aceptamos todas las tarjetas y también efectivo.",
            },
            {
                "question": "Gracias, adiós",
                "keywords": ["gracias", "adios", "hasta", "thank", "thanks", "goodbye", "bye"],
                "answer": "De nada. Le esperamos con mucho gusto. ¡Adiós!",
            },
        ],
    },
    "fr": {
        "greeting": "Bonjour, ici Bella Vista. Que puis-je faire pour vous ?",
        "persona": "Vous êtes Sofia, l'hôtesse chaleureuse de Bella Vista, un restaurant italien. "
        "Vous aidez à réserver une table et répondez aux questions sur les horaires, la carte et le "
        "parking. Répondez toujours en français, en une ou deux phrases courtes.",
        "phrases": [
            "je voudrais réserver une table pour deux",
            "avez-vous une table pour quatre ce soir ?",
            "à quelle heure ouvrez-vous ?",
            "à quelle heure fermez-vous ?",
            "êtes-vous ouverts le dimanche ?",
            "avez-vous des plats végétariens ?",
            "y a-t-il un parking près du restaurant ?",
            "où êtes-vous situés ?",
            "je voudrais annuler ma réservation",
            "combien coûte le menu ?",
            "acceptez-vous la carte bancaire ?",
            "merci, au revoir",
            "oui, s'il vous plaît",
            "non merci",
        ],
        "faq": [
            {
                "question": "Je voudrais réserver une table",
                "keywords": ["reserver", "reservation", "table", "book"],
                "answer": "Bien sûr. Pour combien de personnes, et à quelle heure ?",
            },
            {
                "question": "À quelle heure ouvrez-vous et fermez-vous ?",
                "keywords": [
                    "heure",
                    "horaires",
                    "ouvert",
                    "ouvrez",
                    "fermez",
                    "dimanche",
                    "open",
                    "close",
                    "hours",
                    "sunday",
                ],
                "answer": "Nous sommes ouverts tous les jours, de midi à vingt-trois heures.",
            },
            {
                "question": "Avez-vous des plats végétariens ou sans gluten ?",
                "keywords": [
                    "vegetarien",
                    "vegetarienne",
                    "vegan",
                    "gluten",
                    "plats",
                    "vegetarian",
                    "dishes",
                ],
                "answer": "Oui, la moitié de la carte est végétarienne, et nous avons des pâtes sans gluten.",
            },
            {
                "question": "Y a-t-il un parking ?",
                "keywords": ["parking", "garer", "voiture", "park", "car"],
                "answer": "Il y a un parking gratuit juste derrière le restaurant.",
            },
            {
                "question": "Où êtes-vous situés ?",
                "keywords": ["adresse", "situes", "trouvez", "where", "located", "address"],
                "answer": "Nous sommes au douze rue du Port, à côté du vieux phare.",
            },
            {
                "question": "Puis-je annuler ou modifier ma réservation ?",
                "keywords": ["annuler", "modifier", "changer", "deplacer", "cancel", "change", "move"],
                "answer": "Bien sûr, donnez-moi le nom de la réservation et je m'en occupe.",
            },
            {
                "question": "Combien coûte le menu ?",
                "keywords": ["combien", "prix", "coute", "menu", "much", "price", "cost", "set"],
                "answer": "Le menu est à trente-cinq euros pour trois plats.",
            },
            {
                "question": "Acceptez-vous la carte bancaire ?",
                "keywords": ["carte", "bancaire", "payer", "especes", "card", "cards", "pay", "cash"],
                "answer": "Oui, nous acceptons toutes les cartes bancaires et les espèces.",
            },
            {
                "question": "Merci, au revoir",
                "keywords": ["merci", "revoir", "thank", "thanks", "goodbye", "bye"],
                "answer": "Je vous en prie. À bientôt, au revoir !",
            },
        ],
    },
}

CLINIC = {
    "es": {
        "greeting": "Clínica Riverside, le atiende Sam. ¿En qué puedo ayudarle?",
        "persona": "Eres Sam, recepcionista de la clínica familiar Riverside. Ayudas a los pacientes "
        "a pedir cita y respondes preguntas prácticas. Nunca das consejos médicos. "
        "Responde siempre en español, con frases cortas.",
        "phrases": [
            "necesito ver a un médico",
            "¿puedo pedir cita para mañana?",
            "quisiera una cita con la doctora Miller",
            "¿cuál es su horario?",
            "¿tengo que traer la tarjeta del seguro?",
            "¿pueden renovarme una receta?",
            "necesito cancelar mi cita",
            "¿hay una farmacia cerca?",
            "¿cuánto hay que esperar?",
            "¿hacen análisis de sangre?",
            "mi hijo tiene fiebre",
            "gracias, adiós",
        ],
        "faq": [
            {
                "question": "¿Puedo pedir cita?",
                "keywords": ["cita", "medico", "doctor", "doctora", "ver", "appointment", "see", "book"],
                "answer": "Por supuesto. La próxima cita libre es mañana a las nueve y media. "
                "¿Se la reservo?",
            },
            {
                "question": "¿Cuál es su horario?",
                "keywords": ["horario", "hora", "abren", "abierto", "cierran", "open", "hours", "close"],
                "answer": "La clínica abre de lunes a viernes, de ocho a seis.",
            },
            {
                "question": "¿Necesito la tarjeta del seguro?",
                "keywords": ["seguro", "tarjeta", "traer", "insurance", "card", "bring"],
                "answer": "Sí, traiga la tarjeta del seguro y un documento de identidad.",
            },
            {
                "question": "¿Pueden renovarme una receta?",
                "keywords": [
                    "receta",
                    "renovar",
                    "medicamento",
                    "medicina",
                    "prescription",
                    "renew",
                    "medicine",
                ],
                "answer": "Renovar una receta lleva dos días laborables. "
                "Puedo pasarle la petición a su médico.",
            },
            {
                "question": "Necesito cancelar mi cita",
                "keywords": ["cancelar", "anular", "cambiar", "mover", "cancel", "change", "move"],
                "answer": "No hay problema. ¿Me dice su nombre y su fecha de nacimiento?",
            },
            {
                "question": "¿Hay una farmacia cerca?",
                "keywords": ["farmacia", "pharmacy", "chemist"],
                "answer": "Hay una farmacia en la planta baja de nuestro edificio.",
            },
            {
                "question": "¿Hacen análisis de sangre?",
                "keywords": ["analisis", "sangre", "laboratorio", "blood", "test", "tests", "lab"],
                "answer": "Sí, los análisis de sangre se hacen todas las mañanas de ocho a diez, sin cita.",
            },
            {
                "question": "Mi hijo tiene fiebre",
                "keywords": [
                    "fiebre",
                    "hijo",
                    "hija",
                    "enfermo",
                    "urgencia",
                    "fever",
                    "child",
                    "sick",
                    "emergency",
                ],
                "answer": "No puedo dar consejos médicos, pero puedo darle la primera cita de hoy. "
                "En caso de urgencia, llame al uno uno dos.",
            },
            {
                "question": "Gracias, adiós",
                "keywords": ["gracias", "adios", "hasta", "thank", "thanks", "goodbye", "bye"],
                "answer": "Cuídese, ¡adiós!",
            },
        ],
    },
    "fr": {
        "greeting": "Clinique Riverside, Sam à l'appareil. Que puis-je faire pour vous ?",
        "persona": "Vous êtes Sam, réceptionniste de la clinique familiale Riverside. Vous aidez les "
        "patients à prendre rendez-vous et répondez aux questions pratiques. Vous ne donnez jamais de "
        "conseil médical. Répondez toujours en français, en phrases courtes.",
        "phrases": [
            "je voudrais voir un médecin",
            "puis-je prendre rendez-vous pour demain ?",
            "quels sont vos horaires ?",
            "faut-il apporter ma carte d'assurance ?",
            "pouvez-vous renouveler mon ordonnance ?",
            "je dois annuler mon rendez-vous",
            "y a-t-il une pharmacie près d'ici ?",
            "faites-vous des prises de sang ?",
            "mon enfant a de la fièvre",
            "merci, au revoir",
        ],
        "faq": [
            {
                "question": "Puis-je prendre rendez-vous ?",
                "keywords": [
                    "rendez",
                    "medecin",
                    "docteur",
                    "consultation",
                    "appointment",
                    "see",
                    "doctor",
                    "book",
                ],
                "answer": "Bien sûr. Le prochain rendez-vous libre est demain à neuf heures et demie. "
                "Je vous l'inscris ?",
            },
            {
                "question": "Quels sont vos horaires ?",
                "keywords": ["horaires", "heure", "ouvert", "ouvrez", "fermez", "open", "hours", "close"],
                "answer": "La clinique est ouverte du lundi au vendredi, de huit heures à dix-huit heures.",
            },
            {
                "question": "Faut-il apporter la carte d'assurance ?",
                "keywords": ["assurance", "carte", "vitale", "apporter", "insurance", "card", "bring"],
                "answer": "Oui, apportez votre carte d'assurance et une pièce d'identité.",
            },
            {
                "question": "Pouvez-vous renouveler une ordonnance ?",
                "keywords": ["ordonnance", "renouveler", "medicament", "prescription", "renew", "medicine"],
                "answer": "Le renouvellement d'une ordonnance prend deux jours ouvrés. "
                "Je peux transmettre la demande à votre médecin.",
            },
            {
                "question": "Je dois annuler mon rendez-vous",
                "keywords": ["annuler", "modifier", "changer", "deplacer", "cancel", "change", "move"],
                "answer": "Pas de problème. Quels sont votre nom et votre date de naissance ?",
            },
            {
                "question": "Y a-t-il une pharmacie près d'ici ?",
                "keywords": ["pharmacie", "pharmacy", "chemist"],
                "answer": "Il y a une pharmacie au rez-de-chaussée de notre bâtiment.",
            },
            {
                "question": "Faites-vous des prises de sang ?",
                "keywords": ["prise", "sang", "analyse", "laboratoire", "blood", "test", "tests", "lab"],
                "answer": "Oui, les prises de sang ont lieu chaque matin de huit à dix heures, "
                "sans rendez-vous.",
            },
            {
                "question": "Mon enfant a de la fièvre",
                "keywords": ["fievre", "enfant", "malade", "urgence", "fever", "child", "sick", "emergency"],
                "answer": "Je ne peux pas donner de conseil médical, mais je peux vous donner le premier "
                "créneau d'aujourd'hui. En cas d'urgence, appelez le un un deux.",
            },
            {
                "question": "Merci, au revoir",
                "keywords": ["merci", "revoir", "thank", "thanks", "goodbye", "bye"],
                "answer": "Prenez soin de vous, au revoir !",
            },
        ],
    },
}

TRAVEL = {
    "es": {
        "greeting": "Hola, aquí el mostrador de viajes. ¿Adónde quiere ir?",
        "persona": "Eres Alex, agente del mostrador de viajes de la estación central. Respondes en "
        "pocas palabras sobre trenes, el aeropuerto y hoteles. Responde siempre en español.",
        "phrases": [
            "¿cuándo sale el próximo tren al aeropuerto?",
            "¿cuánto cuesta un billete al centro?",
            "¿dónde puedo comprar un billete?",
            "¿hay un hotel cerca de la estación?",
            "¿cómo llego al aeropuerto?",
            "¿de qué andén sale el tren?",
            "¿mi tren va con retraso?",
            "¿puedo subir la bici al tren?",
            "¿dónde está la consigna?",
            "gracias, adiós",
        ],
        "faq": [
            {
                "question": "¿Cuándo sale el próximo tren al aeropuerto?",
                "keywords": ["tren", "aeropuerto", "proximo", "train", "airport", "next"],
                "answer": "Los trenes al aeropuerto salen cada quince minutos desde el andén tres.",
            },
            {
                "question": "¿Cuánto cuesta un billete?",
                "keywords": ["cuanto", "billete", "precio", "cuesta", "much", "ticket", "price", "cost"],
                "answer": "Un billete sencillo al centro cuesta dos euros con cincuenta.",
            },
            {
                "question": "¿Dónde puedo comprar un billete?",
                "keywords": ["comprar", "donde", "maquina", "buy", "where", "machine"],
                "answer": "Puede comprar billetes en las máquinas junto a la entrada principal o en la "
                "aplicación.",
            },
            {
                "question": "¿Hay un hotel cerca de la estación?",
                "keywords": ["hotel", "alojarme", "habitacion", "noche", "stay", "room", "night"],
                "answer": "El Hotel Estación está justo al otro lado de la plaza y suele tener habitaciones.",
            },
            {
                "question": "¿De qué andén sale?",
                "keywords": ["anden", "salida", "platform", "leave", "departure"],
                "answer": "Mire los paneles de salidas; los trenes regionales salen de los andenes "
                "uno a cuatro.",
            },
            {
                "question": "¿Mi tren va con retraso?",
                "keywords": ["retraso", "tarde", "retrasado", "delayed", "late", "delay"],
                "answer": "Ahora mismo todos los trenes circulan puntuales.",
            },
            {
                "question": "¿Puedo llevar la bici?",
                "keywords": ["bici", "bicicleta", "bike", "bicycle"],
                "answer": "Sí, las bicis pueden viajar fuera de la hora punta con un billete de bici.",
            },
            {
                "question": "¿Dónde está la consigna?",
                "keywords": [
                    "consigna",
                    "equipaje",
                    "maleta",
                    "taquilla",
                    "luggage",
                    "left",
                    "bag",
                    "bags",
                    "locker",
                ],
                "answer": "Las taquillas de la consigna están junto al andén uno.",
            },
            {
                "question": "Gracias, adiós",
                "keywords": ["gracias", "adios", "hasta", "thank", "thanks", "goodbye", "bye"],
                "answer": "¡Buen viaje!",
            },
        ],
    },
    "fr": {
        "greeting": "Bonjour, ici le guichet voyages. Où souhaitez-vous aller ?",
        "persona": "Vous êtes Alex, agent du guichet voyages de la gare centrale. Vous répondez en "
        "quelques mots aux questions sur les trains, l'aéroport et les hôtels. "
        "Répondez toujours en français.",
        "phrases": [
            "quand part le prochain train pour l'aéroport ?",
            "combien coûte un billet pour le centre-ville ?",
            "où puis-je acheter un billet ?",
            "y a-t-il un hôtel près de la gare ?",
            "de quelle voie part le train ?",
            "mon train est-il en retard ?",
            "puis-je prendre mon vélo dans le train ?",
            "où est la consigne ?",
            "merci, au revoir",
        ],
        "faq": [
            {
                "question": "Quand part le prochain train pour l'aéroport ?",
                "keywords": ["train", "aeroport", "prochain", "airport", "next"],
                "answer": "Les trains pour l'aéroport partent toutes les quinze minutes, voie trois.",
            },
            {
                "question": "Combien coûte un billet ?",
                "keywords": ["combien", "billet", "prix", "coute", "much", "ticket", "price", "cost"],
                "answer": "Un aller simple pour le centre-ville coûte deux euros cinquante.",
            },
            {
                "question": "Où puis-je acheter un billet ?",
                "keywords": ["acheter", "distributeur", "guichet", "buy", "where", "machine"],
                "answer": "Vous pouvez acheter vos billets aux distributeurs près de l'entrée principale "
                "ou dans l'application.",
            },
            {
                "question": "Y a-t-il un hôtel près de la gare ?",
                "keywords": ["hotel", "dormir", "chambre", "nuit", "stay", "room", "night"],
                "answer": "L'Hôtel de la Gare est juste en face, de l'autre côté de la place, "
                "et a souvent des chambres.",
            },
            {
                "question": "De quelle voie part le train ?",
                "keywords": ["voie", "quai", "depart", "platform", "leave", "departure"],
                "answer": "Regardez les tableaux des départs ; les trains régionaux partent des voies "
                "un à quatre.",
            },
            {
                "question": "Mon train est-il en retard ?",
                "keywords": ["retard", "retarde", "delayed", "late", "delay"],
                "answer": "Tous les trains circulent à l'heure en ce moment.",
            },
            {
                "question": "Puis-je prendre mon vélo ?",
                "keywords": ["velo", "bicyclette", "bike", "bicycle"],
                "answer": "Oui, les vélos sont acceptés en dehors des heures de pointe, avec un billet vélo.",
            },
            {
                "question": "Où est la consigne ?",
                "keywords": [
                    "consigne",
                    "bagage",
                    "valise",
                    "casier",
                    "luggage",
                    "left",
                    "bag",
                    "bags",
                    "locker",
                ],
                "answer": "Les casiers de la consigne sont à côté de la voie un.",
            },
            {
                "question": "Merci, au revoir",
                "keywords": ["merci", "revoir", "thank", "thanks", "goodbye", "bye"],
                "answer": "Bon voyage !",
            },
        ],
    },
}


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
            "flow": {"template_id": "flow-restaurant", "tools": ["check_availability", "current_time"]},
            "retell": {"agent_id": "agent_restaurant", "functions": ["check_availability", "current_time"]},
        },
        "translations": RESTAURANT,
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
        "provider_options": {
            "liku": {"topic_id": "56"},
            "aivoco": {"functions": ["current_time"]},
            "flow": {"template_id": "flow-clinic", "tools": ["current_time"]},
            "retell": {"agent_id": "agent_clinic", "functions": ["current_time"]},
        },
        "translations": CLINIC,
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
        "provider_options": {
            "liku": {"topic_id": "57"},
            "flow": {"template_id": "flow-travel"},
            "retell": {"agent_id": "agent_travel"},
        },
        "translations": TRAVEL,
    },
]
